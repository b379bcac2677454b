# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin for ``specfleet_health`` (documentation in ``library/specfleet_health.py``).

One SSH command measures the node (:func:`specfleet.ops.health.probe_script`); the judgement
and the store update happen on the controller. A node that cannot be reached is a result
here, not an unreachable host, so the guardian can take it out and the play goes on.
"""
from __future__ import annotations

import time

from ansible.errors import AnsibleConnectionFailure

from ansible_specfleet.action import ControllerAction
from specfleet.dispatch import inventory, jobs
from specfleet.node import DIR as node_dir
from specfleet.node.runfiles import runner_version
from specfleet.ops import health
from specfleet.store.core import Store, StoreError


class ActionModule(ControllerAction):
    _requires_connection = True
    ERRORS = (StoreError, jobs.JobError)

    def act(self, result, args, task_vars, db):
        problems = inventory.check_agent_clis(args["clis"], host=args["node"])
        if problems:
            return dict(result, failed=True, msg="; ".join(map(str, problems)))
        script = health.probe_script(args["root"], args["clis"], args["stale_after_h"], args["path"])
        try:
            answer = self._shell(script)
            sent = time.time()
            clock = self._shell(health.CLOCK_SCRIPT)  # the connection is warm: one short round trip
            answered = time.time()
        except AnsibleConnectionFailure as exc:
            verdict = health.unreachable(args["node"], str(exc))
        else:
            if answer["rc"] != 0 and not answer["stdout"].strip():
                verdict = health.unreachable(args["node"], answer["stderr"] or f"the probe exited {answer['rc']}")
                verdict.reachable = True
            else:
                limits = {k: args[k] for k in health.DEFAULTS}
                measured = health.parse(clock["stdout"] + "\n" + answer["stdout"])
                verdict = health.judge(args["node"], measured, args["clis"], sent, answered,
                                       runner_version(str(node_dir)), limits)
        changed = False
        if not self._task.check_mode:
            with Store(db) as store:
                if verdict.healthy:
                    changed = store.set_node_in(args["node"], "health")
                else:
                    changed = store.set_node_out(args["node"], "health", "; ".join(verdict.problems))
        return dict(result, changed=changed, line=list(verdict.row()), **verdict.as_dict())
