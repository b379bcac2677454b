# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The node runner's entry point: ``run``, ``finalize`` and ``version`` of one attempt.

The controller copies the files named in ``shipped.txt`` (this entry point and the modules it
imports) into the attempt's run directory with
``job.json`` (everything the attempt needs, no secrets), ``prompt.md`` and, when an
executor needs keys, ``secrets.json`` (read once and deleted). The job wrapper of
``jobs.py`` runs ``python3 runner.py run <run dir>`` detached from SSH; this module only
uses the Python standard library, so a node needs nothing but ``python3`` and ``git``.

What it leaves in the run directory:

====================  ==============================================================
``status.json``       state (running, succeeded, failed, killed), phase, error,
                      rounds, executor that produced the result, commit, timings.
                      Always finalised: by the runner, by its SIGTERM handler, or by
                      ``runner.py finalize`` which the wrapper runs after a SIGKILL.
``heartbeat``         node time, rewritten every ``heartbeat_s`` (job.json, default 10 s) while the
                      runner lives; the controller's waiter reads its age (stall detection)
``runner_pid``        the runner; ``child_pgids`` the process groups of its children
``round-N.prompt.md`` the prompt of each agent round (feedback appended)
``round-N.agent.log`` the agent's output (secrets redacted), one per executor try
``round-N.verify.log`` the verify command's output
``round-N.gates.json`` the gate results of the round
``changes.patch``     the diff against the start of the workspace (also on failure)
``result.bundle``     the committed branch, for the controller (bundle transport)
====================  ==============================================================

Every ``modifies`` path check uses :func:`paths.covers`, the same rule as the locks.
"""
from __future__ import annotations

import os
import signal
import sys
import traceback

try:  # inside the controller's package
    from .attempt import Attempt, finalize_after_exit
    from .runfiles import InfrastructureError, RunnerError, runner_version, tail
except ImportError:  # copied next to this file on a node
    from attempt import Attempt, finalize_after_exit  # type: ignore[no-redef]
    from runfiles import InfrastructureError, RunnerError, runner_version, tail  # type: ignore[no-redef]

# What the controller and the tests import from the runner, wherever it now lives. Only
# inside the package: on a node nothing imports the runner.
if __package__:
    from .attempt import HEARTBEAT_S, sum_usage
    from .credentials import Redactor, read_credentials
    from .executor import Executor
    from .gates import Change, added_lines, is_test_path, parse_name_status, run_gates, tests_counted
    from .process import KILL_GRACE_S, kill_group
    from .runfiles import FILES, now, write_atomic

    __all__ = ["FILES", "HEARTBEAT_S", "KILL_GRACE_S", "Attempt", "Change", "Executor", "InfrastructureError",
               "Redactor", "RunnerError", "added_lines", "finalize_after_exit", "is_test_path", "kill_group", "main",
               "now", "parse_name_status", "read_credentials", "run_gates", "runner_version", "sum_usage", "tail",
               "tests_counted", "write_atomic"]


def main(argv: list[str]) -> int:
    if argv == ["version"]:
        print(runner_version())
        return 0
    if len(argv) == 3 and argv[0] == "finalize":
        finalize_after_exit(argv[1], int(argv[2]) if argv[2].lstrip("-").isdigit() else 1)
        return 0
    if len(argv) != 2 or argv[0] != "run":
        print("usage: runner.py run RUN_DIR | runner.py finalize RUN_DIR EXIT_CODE | runner.py version", file=sys.stderr)
        return 2
    try:
        attempt = Attempt(argv[1])
    except Exception as exc:  # unreadable job.json: say so in the status, never crash silently
        finalize_after_exit(argv[1], 1, f"the runner could not start: {exc!r}")
        return 1

    def terminated(signum, _frame):
        attempt.kill_children()
        attempt.finalise("killed", f"terminated by signal {signum} during {attempt.status.get('phase')}",
                         exit_code=128 + signum)
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, terminated)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        return attempt.run()
    except InfrastructureError as exc:
        attempt.status["infrastructure"] = True
        attempt.finalise("failed", str(exc))
    except RunnerError as exc:
        attempt.finalise("failed", str(exc))
    except Exception as exc:  # the status must say what broke, whatever it was
        attempt.finalise("failed", f"runner crashed in {attempt.status.get('phase')}: {exc!r}\n"
                                   f"{tail(traceback.format_exc(), 12)}")
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
