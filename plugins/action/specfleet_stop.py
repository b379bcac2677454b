# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin for ``specfleet_stop`` (documentation in ``library/specfleet_stop.py``)."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from ansible.plugins.action import ActionBase

_CORE = str(Path(__file__).resolve().parents[1] / "module_utils")
if _CORE not in sys.path:
    sys.path.insert(0, _CORE)

from specfleet import controller  # noqa: E402
from specfleet.store import StoreError  # noqa: E402

ARGUMENT_SPEC = {
    "project": {"type": "str", "required": True},
    "mode": {"type": "str", "choices": ["drain", "cancel"], "default": "drain"},
    "wait": {"type": "bool", "default": False},
    "timeout": {"type": "int", "default": 300},
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
        db = str(controller.resolve_db(args["db"] or task_vars.get("specfleet_db")))
        try:
            if args["wait"]:
                return self._wait(result, db, args)
            if self._task.check_mode:
                runs = controller.live_runs(db, args["project"])
                return dict(result, changed=False, runs=runs, jobs=[],
                            msg=f"check mode: would ask {len(runs)} run(s) to {args['mode']}")
            asked = controller.request_stop(db, args["project"], args["mode"])
        except StoreError as exc:
            return dict(result, failed=True, msg=f"state store {db}: {exc}")
        count = len(asked["runs"])
        msg = (f"asked {count} dispatch run(s) of {args['project']} to {args['mode']}; "
               f"{len(asked['jobs'])} spec(s) running") if count else f"no dispatch run of {args['project']} is running"
        return dict(result, changed=bool(count), msg=msg, **asked)

    def _wait(self, result: dict, db: str, args: dict) -> dict:
        deadline = time.monotonic() + args["timeout"]
        while True:
            runs = controller.live_runs(db, args["project"])
            if not runs:
                return dict(result, changed=False, runs=[], msg=f"no dispatch run of {args['project']} is running")
            if time.monotonic() >= deadline:
                return dict(result, failed=True, runs=runs,
                            msg=f"{len(runs)} run(s) still running after {args['timeout']} s: "
                                + ", ".join(r["id"] for r in runs))
            time.sleep(1.0)
