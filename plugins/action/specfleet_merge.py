# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin for ``specfleet_merge`` (documentation in ``library/specfleet_merge.py``)."""
from __future__ import annotations

from ansible_specfleet.action import LandingAction
from specfleet.attempt.workspace import integration_branch
from specfleet.land.queue import MergeQueue, merge_queue
from specfleet.store.core import Store


class ActionModule(LandingAction):

    def act(self, result, args, task_vars, db):
        config = self.project_config(args, task_vars)
        where = self.where(task_vars, config.name)
        with Store(db) as store:
            if self._task.check_mode:
                ready, waiting = MergeQueue(store, config).candidates()
                return dict(result, changed=False, ready=ready, waiting=waiting,
                            msg=f"check mode: {len(ready)} branches would enter the merge queue")
            done = merge_queue(store, config, run_id=args["run_id"], where=where)
            mine = store.spec(config.name, args["task_id"]) if args["task_id"] else None
        result.update(done.as_dict(), changed=bool(done.merged or done.resumed or done.conflicts or done.broken))
        lines = [f"{config.name}: {len(done.merged)} merged into {integration_branch(config.name)} in "
                 f"{done.batches} batches with {done.test_runs} test runs"
                 + (f"; integration at {done.tip[:12]}" if done.tip else "")]
        lines += [f"{t}: conflict in {', '.join(f)}; queued again with the conflict as feedback"
                  for t, f in sorted(done.conflicts.items())]
        lines += [f"{t}: broke the merged build (bisected); queued again" for t in sorted(done.broken)]
        lines += [f"{t} waits: {why}" for t, why in sorted(done.waiting.items())]
        if done.promoted:
            lines.append(f"{config.base_branch} promoted to {done.promoted[:12]} (promote: auto)")
        result["msg"] = lines
        if mine is not None:
            result["state"] = mine.state.value
            if mine.state.value != "merged":
                result.update(failed=True, msg=lines + [f"{mine.task_id} did not land: {mine.state.value}: {mine.reason}"])
        return result
