# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin for ``specfleet_report`` (documentation in ``library/specfleet_report.py``)."""
from __future__ import annotations

from ansible_specfleet.action import ControllerAction
from specfleet.ops import controller


class ActionModule(ControllerAction):

    def act(self, result, args, task_vars, db):
        report = controller.run_report(db, args["project"], args["run_id"], args["task_ids"], args.get("done"))
        if args["run_id"]:  # already closed by the dispatch play, unless it had no spec to run
            controller.close_run(db, args["run_id"], "ok" if report["complete"] else "failed")
        result.update(summary=report["summary"], by_state=report["by_state"], attempts=report["attempts"],
                      changed=False, msg=[report["summary"], *report["not_completed"], *report["usage_lines"]])
        if report["usage"]["total"]["attempts"]:  # plain jobs use no model: nothing to show
            result["usage"] = report["usage"]
        if not report["complete"]:
            result["failed"] = True
        return result
