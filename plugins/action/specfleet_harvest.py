# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin for ``specfleet_harvest`` (documentation in ``library/specfleet_harvest.py``).

Settles the leftovers of one node: jobs that outlived the run which started them. One
SSH command reads the state of every leftover's run directory; the store decides
(``LeaseBook.settle_leftover``) whether the leftover stays for adoption, is settled, or
is a superseded job that still runs and must be killed first.
"""
from __future__ import annotations

from ansible_specfleet.action import ControllerAction
from specfleet.dispatch import jobs
from specfleet.dispatch.leases import LeaseBook
from specfleet.store.core import Store, StoreError


class ActionModule(ControllerAction):
    _requires_connection = True
    ERRORS = (StoreError, jobs.JobError)

    def act(self, result, args, task_vars, db):
        with Store(db) as store:
            return self._harvest(result, args, LeaseBook(store, args["run_id"]))

    def _harvest(self, result: dict, args: dict, book: LeaseBook) -> dict:
        if not self._task.check_mode:
            book.expire()  # dead runs' jobs become leftovers (collect.yml has no run that did it)
            book.node_healthy(args["node"], seen=True)  # it answered: a quarantined node is re-admitted
        rows = book.leftovers(args["node"])
        result.update(changed=False, kept=[], settled=[], killed=[], finished=[], running=[])
        if not rows:
            return dict(result, msg="no jobs left here by earlier runs")
        runs = {row["attempt_id"]: jobs.run_dir(args["root"], row["project"], row["task_id"], row["attempt"],
                                                row["job_run"]) for row in rows}
        if self._task.check_mode:
            return dict(result, msg=f"{len(rows)} jobs left by earlier runs (check mode: not looked at)")
        script = jobs.JOB_STATE + "".join(f'echo "{attempt_id} $(job_state {jobs.shell_path(run)})"\n'
                                          for attempt_id, run in runs.items())
        answer = self._shell(script)
        if answer["rc"] != 0:
            return dict(result, failed=True, msg=f"could not read the leftover jobs: {answer['stderr'].strip()[-300:]}")
        found = dict(line.split(" ", 1) for line in answer["stdout"].splitlines() if " " in line)
        names = {row["attempt_id"]: f"{row['project']}/{row['task_id']}#{row['attempt']}" for row in rows}
        for attempt_id, run in runs.items():
            decision = book.settle_leftover(attempt_id, found.get(str(attempt_id), "missing").strip())
            if decision == "kill":
                self._shell(jobs.cancel_script(run, "superseded: the spec ran again while this node was out"))
                decision = book.settle_leftover(attempt_id, "lost")
                result["killed"].append(names[attempt_id])
                result["changed"] = True
            (result["kept"] if decision == "keep" else result["settled"]).append(names[attempt_id])
            if decision == "keep":
                row = next(r for r in rows if r["attempt_id"] == attempt_id)
                job = found.get(str(attempt_id), "").strip()
                result["finished" if job == "finished" else "running"].append(
                    {k: row[k] for k in ("project", "task_id", "attempt", "job_run")})
        return dict(result, msg=f"{len(result['kept'])} kept for adoption, {len(result['settled'])} settled"
                                f" ({len(result['killed'])} still running and killed)")
