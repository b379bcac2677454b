# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin for ``specfleet_harvest`` (documentation in ``library/specfleet_harvest.py``).

Settles the leftovers of one node: jobs that outlived the run which started them. One
SSH command reads the state of every leftover's run directory; the store decides
(``LeaseBook.settle_leftover``) whether the leftover stays for adoption, is settled, or
is a superseded job that still runs and must be killed first.
"""
from __future__ import annotations

import sys
from pathlib import Path

from ansible.plugins.action import ActionBase

_CORE = str(Path(__file__).resolve().parents[1] / "module_utils")
if _CORE not in sys.path:
    sys.path.insert(0, _CORE)

from specfleet import controller, jobs  # noqa: E402
from specfleet.leases import LeaseBook  # noqa: E402
from specfleet.store import Store, StoreError  # noqa: E402

ARGUMENT_SPEC = {
    "node": {"type": "str", "required": True},
    "root": {"type": "str", "required": True},
    "db": {"type": "path"},
    "run_id": {"type": "str"},
}
# Per run directory: "<attempt id> <finished|running|lost|missing>".
PROBE = ('if [ -e {run}/exit_code ]; then s=finished; elif [ -e {run}/wrapper_pid ]; then '
         'if kill -0 "$(cat {run}/wrapper_pid)" 2>/dev/null; then s=running; else s=lost; fi; '
         'else s=missing; fi; echo "{id} $s"')


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(ARGUMENT_SPEC)

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        _spec, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        db = str(controller.resolve_db(args["db"] or (task_vars or {}).get("specfleet_db")))
        try:
            with Store(db) as store:
                return self._harvest(result, args, LeaseBook(store, args["run_id"]))
        except (StoreError, jobs.JobError) as exc:
            return dict(result, failed=True, msg=f"state store {db}: {exc}")

    def _harvest(self, result: dict, args: dict, book: LeaseBook) -> dict:
        if not self._task.check_mode:
            book.node_healthy(args["node"], seen=True)  # it answered: a quarantined node is re-admitted
        rows = book.leftovers(args["node"])
        result.update(changed=False, kept=[], settled=[], killed=[])
        if not rows:
            return dict(result, msg="no jobs left here by earlier runs")
        runs = {row["attempt_id"]: jobs.run_dir(args["root"], row["project"], row["task_id"], row["attempt"],
                                                row["job_run"]) for row in rows}
        if self._task.check_mode:
            return dict(result, msg=f"{len(rows)} jobs left by earlier runs (check mode: not looked at)")
        script = "\n".join(PROBE.format(run=jobs.shell_path(run), id=attempt_id) for attempt_id, run in runs.items())
        answer = self._low_level_execute_command(script, sudoable=False)
        if answer["rc"] != 0:
            return dict(result, failed=True, msg=f"could not read the leftover jobs: {answer['stderr'].strip()[-300:]}")
        found = dict(line.split(" ", 1) for line in answer["stdout"].splitlines() if " " in line)
        names = {row["attempt_id"]: f"{row['project']}/{row['task_id']}#{row['attempt']}" for row in rows}
        for attempt_id, run in runs.items():
            job = found.get(str(attempt_id), "missing").strip()
            decision = book.settle_leftover(attempt_id, job)
            if decision == "kill":
                self._low_level_execute_command(
                    jobs.cancel_script(run, "superseded: the spec ran again while this node was out").rstrip("\n"),
                    sudoable=False)
                decision = book.settle_leftover(attempt_id, "lost")
                result["killed"].append(names[attempt_id])
                result["changed"] = True
            (result["kept"] if decision == "keep" else result["settled"]).append(names[attempt_id])
        return dict(result, msg=f"{len(result['kept'])} kept for adoption, {len(result['settled'])} settled"
                                f" ({len(result['killed'])} still running and killed)")
