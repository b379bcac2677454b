# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin for ``specfleet_report`` (documentation in ``library/specfleet_report.py``)."""
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
    "run_id": {"type": "str"},
    "task_ids": {"type": "list", "elements": "str", "default": []},
    "db": {"type": "path"},
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
            report = controller.run_report(str(db), args["project"], args["run_id"], args["task_ids"])
        except StoreError as exc:
            return dict(result, failed=True, msg=f"state store {db}: {exc}")
        result.update(summary=report["summary"], by_state=report["by_state"], attempts=report["attempts"],
                      changed=False, msg=[report["summary"], *report["not_completed"]])
        if not report["complete"]:
            result["failed"] = True
        return result
