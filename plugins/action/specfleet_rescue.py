# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin for ``specfleet_rescue`` (documentation in ``library/specfleet_rescue.py``)."""
from __future__ import annotations

from ansible_specfleet.action import ControllerAction
from specfleet.ops import controller
from specfleet.store.core import Store


class ActionModule(ControllerAction):

    def act(self, result, args, task_vars, db):
        # Feed first: the person fixed the spec files, and the fix must be what runs next.
        report, fed = controller.feed(db=db, dry_run=self._task.check_mode,
                                      **controller.project_inputs(args, task_vars))
        if fed is None:
            return dict(result, failed=True, changed=False, msg=report.summary())
        if self._task.check_mode:
            return dict(result, changed=False, feed=fed.as_dict(), msg="check mode: nothing re-queued")
        with Store(db) as store:
            rescued = store.rescue(args["project"], args["tasks"])
        result.update(rescued, feed=fed.as_dict(), changed=bool(rescued["requeued"]) or fed.changed)
        lines = [f"{args['project']}: re-queued {len(rescued['requeued'])}: {', '.join(rescued['requeued']) or 'none'}"]
        lines += [f"{task} left as it is: {state}" for task, state in sorted(rescued["skipped"].items())]
        if fed.revised:
            lines.append(f"revised specs (their new revision runs): {', '.join(fed.revised)}")
        return dict(result, msg=lines)
