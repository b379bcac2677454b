# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin for ``specfleet_validate`` (documentation in ``library/specfleet_validate.py``).

It runs on the controller, where the specs and the state database are; the policy is in
the Ansible-free core (``plugins/module_utils/specfleet``).
"""
from __future__ import annotations

import sys
from pathlib import Path

from ansible.plugins.action import ActionBase

_CORE = str(Path(__file__).resolve().parents[1] / "module_utils")
if _CORE not in sys.path:
    sys.path.insert(0, _CORE)

from specfleet import controller  # noqa: E402

ARGUMENT_SPEC = {
    "project": {"type": "str", "required": True},
    "specs_root": {"type": "path"},
    "executors": {"type": "raw"},
    "default_executor": {"type": "str"},
    "check_repository": {"type": "bool", "default": True},
}


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False
    _VALID_ARGS = frozenset(ARGUMENT_SPEC)

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        _spec, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        report = controller.validate(**controller.project_inputs(args, task_vars),
                                     check_repository=args["check_repository"])
        result.update(report.as_dict(), changed=False, summary=report.summary())
        if not report.ok:
            result.update(failed=True, msg=report.summary())
        return result
