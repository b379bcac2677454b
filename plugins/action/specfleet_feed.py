# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin for ``specfleet_feed`` (documentation in ``library/specfleet_feed.py``)."""
from __future__ import annotations

import multiprocessing
import os

from ansible_specfleet.action import ControllerAction
from specfleet.model.states import RunKind
from specfleet.ops import controller


class ActionModule(ControllerAction):

    def act(self, result, args, task_vars, db):
        # Ansible's `groups` (group -> hosts), as plain data: a spec id that is a host or group
        # name is refused here, before anything is stored (dispatch adds one host per spec).
        report, fed = controller.feed(db=db, dry_run=self._task.check_mode,
                                      inventory_groups=task_vars.get("groups"),
                                      **controller.project_inputs(args, task_vars))
        result.update(report.as_dict(), db=db, summary=report.summary())
        if fed is None:
            return dict(result, failed=True, changed=False, msg=report.summary())
        # Agents or plain jobs: decided here, once, and recorded with the run.
        kind = RunKind.of(task_vars.get("specfleet_job_command"))
        result.update(changed=fed.changed, feed=fed.as_dict(), run_id=controller.new_run_id(), run_kind=kind.value)
        if self._task.check_mode:  # nothing was queued and no run is opened
            result["runnable"] = []
            return result
        if args["open_run"]:
            # The run belongs to the ansible-playbook process (this worker's parent), so a
            # later dispatch can tell at once that it died; a second live one is refused.
            # The pid the worker was forked from, not getppid(): a worker orphaned by a
            # killed controller has pid 1 as its parent, which never dies.
            parent = multiprocessing.parent_process()
            owner = parent.pid if parent is not None and parent.pid else os.getppid()
            result["run_id"] = controller.open_dispatch(db, args["project"], owner_pid=owner, work=kind)
        result["runnable"] = controller.plan(db, args["project"], reclaim=not args["open_run"])
        return result
