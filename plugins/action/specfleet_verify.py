# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin for ``specfleet_verify`` (documentation in ``library/specfleet_verify.py``)."""
from __future__ import annotations

from ansible_specfleet.action import LandingAction, chat_endpoint
from specfleet.land.verify import verify
from specfleet.model.states import SpecState
from specfleet.store.core import Store


class ActionModule(LandingAction):

    def act(self, result, args, task_vars, db):
        config = self.project_config(args, task_vars)
        where = self.where(task_vars, config.name)
        if args["preflight"]:
            return dict(result, changed=False, where=where.name, msg=f"{config.name}: the project's commands can run "
                        f"on {where.name}" + (" (sandboxed)" if getattr(where, "sandboxed", False) else ""))
        endpoint = None
        if config.review != "off":
            try:
                endpoint = chat_endpoint(self._templar, task_vars, "specfleet_review_endpoint")
            except ValueError as exc:
                return dict(result, failed=True, msg=str(exc))
        with Store(db) as store:
            names = args["tasks"] or [r.task_id for r in store.specs(config.name, states=[SpecState.COMPLETED])]
            if self._task.check_mode:
                return dict(result, changed=False, would_verify=names, msg=f"check mode: would verify {len(names)} specs")
            verdicts = [verify(store, config, name, run_id=args["run_id"], endpoint=endpoint,
                                       where=where) for name in names]
        failed = [v for v in verdicts if not v.ok]
        result.update(changed=bool(verdicts), verified=[v.task_id for v in verdicts if v.ok],
                      sent_back={v.task_id: v.state for v in failed},
                      checks={v.task_id: v.checks for v in verdicts},
                      msg=[f"{v.task_id}: {'verified' if v.ok else 'now ' + v.state}: {v.summary}" for v in verdicts]
                      or [f"{config.name}: no completed spec waits for verification"])
        if failed and args["tasks"]:
            result["failed"] = True
        return result
