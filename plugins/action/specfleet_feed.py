# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin for ``specfleet_feed`` (documentation in ``library/specfleet_feed.py``)."""
from __future__ import annotations

import sys
from pathlib import Path

from ansible.plugins.action import ActionBase

_CORE = str(Path(__file__).resolve().parents[1] / "module_utils")
if _CORE not in sys.path:
    sys.path.insert(0, _CORE)

from specfleet import controller  # noqa: E402
from specfleet.store import StoreError  # noqa: E402

ARGUMENT_SPEC = {
    "project": {"type": "str", "required": True},
    "db": {"type": "path"},
    "specs_root": {"type": "path"},
    "executors": {"type": "raw"},
    "default_executor": {"type": "str"},
}


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False
    _VALID_ARGS = frozenset(ARGUMENT_SPEC)

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        _spec, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        db = controller.resolve_db(args["db"] or task_vars.get("specfleet_db"))
        try:
            report, fed = controller.feed(db=str(db), dry_run=self._task.check_mode,
                                          **controller.project_inputs(args, task_vars))
        except StoreError as exc:
            return dict(result, failed=True, msg=f"state store {db}: {exc}")
        result.update(report.as_dict(), db=str(db), summary=report.summary())
        if fed is None:
            return dict(result, failed=True, changed=False, msg=report.summary())
        result.update(changed=fed.changed, feed=fed.as_dict())
        result["run_id"] = controller.new_run_id()
        if self._task.check_mode:
            result["runnable"] = []
        else:
            try:
                result["runnable"] = controller.plan(str(db), args["project"])
            except StoreError as exc:
                return dict(result, failed=True, msg=f"state store {db}: {exc}")
        return result
