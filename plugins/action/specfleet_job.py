# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin for ``specfleet_job`` (documentation in ``library/specfleet_job.py``).

Raw shell over the task's connection (no module is copied to the node), so starting
and waiting cost one SSH command each. The scripts come from the core
(``specfleet.dispatch.jobs``); this file only runs them and turns their answers into results.
"""
from __future__ import annotations

import time

from ansible.errors import AnsibleConnectionFailure

from ansible_specfleet.action import SpecfleetAction
from ansible_specfleet.results import JOB_STARTED, JOB_WAITED
from specfleet.dispatch import jobs
from specfleet.model.ending import Ending


def _machinery_failed(result: dict, ending: Ending, **fields) -> dict:
    """A failed result that says how the spec's pipeline ended (see ansible_specfleet.results).

    ``specfleet_infrastructure`` repeats it for the playbooks' ``failed_when`` of the wait step.
    """
    return dict(result, **ending.result(**fields), specfleet_infrastructure=ending.infrastructure)


class ActionModule(SpecfleetAction):
    _requires_connection = True

    @classmethod
    def waits_for_job(cls, args: dict) -> bool:
        """This step waits for a started job (the strategy parks the spec on a node watcher meanwhile)."""
        return args.get("state") == "finished"

    def perform(self, result, args, task_vars):
        try:
            run = jobs.run_dir(args["root"], args["project"], args["task_id"], args["attempt"], args["run_id"])
            workdir = jobs.workspace_dir(args["root"], args["project"], args["task_id"], args["attempt"],
                                         args["run_id"])
        except jobs.JobError as exc:
            return dict(result, failed=True, msg=str(exc))
        result["run_dir"] = run
        if self._task.check_mode:
            return dict(result, changed=False, skipped=True, msg="check mode: no job started or waited on")
        if args["state"] == "started":
            return self._start(result, args, run, workdir)
        if args["state"] == "cancelled":
            return self._cancel(result, run)
        result[JOB_WAITED] = run
        return self._wait(result, args, run)

    def _cancel(self, result: dict, run: str) -> dict:
        answer = self._shell(jobs.cancel_script(run, "cancelled by stop.yml"))
        if answer["rc"] != 0:
            return dict(result, failed=True, msg=f"could not cancel the job in {run}: {answer['stderr'].strip()}")
        word = answer["stdout"].strip().splitlines()[-1] if answer["stdout"].strip() else ""
        return dict(result, changed=word == "SIGNALLED", msg={"SIGNALLED": "killed", "ALREADY_ENDED": "had already ended",
                                                              "NOT_STARTED": "marked cancelled before it started"}
                    .get(word, "no job there"))

    def _start(self, result: dict, args: dict, run: str, workdir: str) -> dict:
        if not args["command"]:  # given (required_if in the docs) but empty
            return dict(result, failed=True, msg="state=started needs a command")
        try:
            script = jobs.launch_script(run, workdir, args["command"], {str(k): str(v) for k, v in args["env"].items()},
                                        args["timeout"])
        except jobs.JobError as exc:
            return dict(result, failed=True, msg=str(exc))
        answer = self._shell(script)
        if answer["rc"] != 0:
            why = answer["stderr"].strip() or answer["stdout"].strip()
            return _machinery_failed(result, Ending.INFRASTRUCTURE, rc=answer["rc"],
                                     msg=f"could not start the job in {run}: {why}")
        attached = "ATTACHED" in answer["stdout"]
        return dict(result, changed=not attached, attached=attached, **{JOB_STARTED: run},
                    msg=("already running: attached to it" if attached else "started"))

    def _wait(self, result: dict, args: dict, run: str) -> dict:
        """Wait in segments; ride out SSH drops shorter than ``grace`` seconds; kill a stalled job."""
        outage_since = None
        while True:
            try:
                answer = self._shell(jobs.wait_script(run, args["segment"], stall_s=args["stall"]))
                if answer["rc"] == 255:
                    raise AnsibleConnectionFailure(answer["stderr"].strip() or "ssh exited 255")
                status = jobs.parse_wait(answer["stdout"])
            except AnsibleConnectionFailure as exc:
                outage_since = outage_since or time.monotonic()
                if time.monotonic() - outage_since > args["grace"]:
                    return dict(result, unreachable=True,
                                msg=f"node unreachable for over {args['grace']} s while waiting on {run}: {exc}")
                self._reconnect()
                time.sleep(min(5.0, 1.0 + (time.monotonic() - outage_since) / 4))
                continue
            except jobs.JobError as exc:
                return _machinery_failed(result, Ending.INFRASTRUCTURE, msg=str(exc))
            outage_since = None
            if status.status == "stalled":
                reason = (f"heartbeat stopped: none for {status.heartbeat_age:.0f} s (limit {args['stall']} s);"
                          " the job's process group was killed")
                self._shell(jobs.stall_script(run, reason))
                continue
            if status.status == "running":
                continue
            return self._ended(result, args, run, status)

    def _reconnect(self) -> None:
        try:
            self._connection.reset()
        except Exception:  # a dead master cannot be reset; the next command connects anew
            self._connection.close()

    def _ended(self, result: dict, args: dict, run: str, status: jobs.JobStatus) -> dict:
        result.update(started_at=status.started_at, ended_at=status.ended_at, rc=status.exit_code,
                      output_tail=status.output_tail, cancelled=status.cancelled, changed=True)
        if status.status == "missing":
            return _machinery_failed(result, Ending.JOB_ENDED, changed=False,
                                     msg=f"no job in {run}: the node lost it (disk replaced, work root removed?)")
        if status.status == "lost":
            return _machinery_failed(result, Ending.JOB_ENDED,
                                     msg=f"the job in {run} died without an exit code (node rebooted or killed it)")
        if status.stalled:
            return _machinery_failed(result, Ending.STALLED, msg=status.stalled)
        if status.cancelled:
            return dict(result, failed=True, msg="cancelled by stop.yml")
        if status.exit_code == jobs.TIMEOUT_EXIT:
            return dict(result, failed=True, msg=f"timed out after {args['timeout']} s")
        if status.exit_code != 0:
            return dict(result, failed=True, msg=f"the job exited with {status.exit_code}")
        return dict(result, msg="the job succeeded")
