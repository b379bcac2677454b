# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin for ``specfleet_review`` (documentation in ``library/specfleet_review.py``)."""
from __future__ import annotations

from ansible_specfleet.action import LandingAction
from specfleet.attempt.workspace import integration_branch
from specfleet.land.reject import reject
from specfleet.land.review import pending_review, promote
from specfleet.store.core import Store


class ActionModule(LandingAction):

    def act(self, result, args, task_vars, db):
        config = self.project_config(args, task_vars)
        where = self.where(task_vars, config.name)
        # Not mutually_exclusive in the docs: review.yml always passes approve, empty when not asked.
        if args["approve"] and args["reject"]:
            return dict(result, failed=True, msg="approve or reject, not both in one run")
        with Store(db) as store:
            lines = []
            if args["reject"] and not self._task.check_mode:
                done = reject(store, config, args["reject"], args["reason"], where=where)
                result.update(changed=True, reverted=done["reverted"])
                lines.append(done["msg"])
            if args["approve"] and not self._task.check_mode:
                wanted = None if args["approve"] in (["all"], ["*"]) else args["approve"]
                done = promote(store, config, wanted)
                result.update(changed=bool(done["promoted"]), promoted=done["promoted"], commit=done["commit"])
                lines.append(done["msg"])
            queue = pending_review(store, config)
        result["queue"] = queue
        header = f"{config.name}: {len(queue)} merged on {integration_branch(config.name)}, not on {config.base_branch}"
        lines.append(header)
        lines += [f"{e['task_id']}: {e['diffstat'] or 'no diff'} | verify: {e['verify']} | review: {e['review']} | "
                  f"attempts {e['attempts']} | {e['hours']} h to merge" for e in queue]
        result["msg"] = lines
        return result
