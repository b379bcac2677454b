# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin for ``specfleet_stop`` (documentation in ``library/specfleet_stop.py``)."""
from __future__ import annotations

import time

from ansible_specfleet.action import ControllerAction
from specfleet.ops import controller


class ActionModule(ControllerAction):

    def act(self, result, args, task_vars, db):
        if args["wait"]:
            return self._wait(result, db, args)
        if self._task.check_mode:
            runs = controller.live_runs(db, args["project"])
            return dict(result, changed=False, runs=runs, jobs=[],
                        msg=f"check mode: would ask {len(runs)} run(s) to {args['mode']}")
        asked = controller.request_stop(db, args["project"], args["mode"])
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
