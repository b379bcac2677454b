# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A spec's job on a worker node: detached, recorded in files, waited on, cancelled.

Each attempt gets a *run directory* ``<work root>/runs/<project>/<task id>/<attempt>-<run id>``
on its node. The job is started detached (``setsid``), so it survives the SSH session,
a dropped connection and the controller; everything about it is a file there:

=================  =========================================================
``command.sh``     what runs (environment exports, ``cd``, the command)
``wrapper_pid``    the supervising shell; alive until ``exit_code`` is written
``job_pid``        process group of the command (what ``cancel`` signals)
``started_at``     node clock, seconds since the epoch
``ended_at``       node clock, when the command ended
``exit_code``      written last, atomically: its presence means "finished"
``output.log``     the command's stdout and stderr
``cancelled``      written by ``stop.yml -e cancel=true`` before it signals
``stalled``        written before a job whose heartbeat stopped is killed
``heartbeat``      written by the agent runner every 10 s (plain jobs have none)
=================  =========================================================

**Heartbeats are read.** The waiter compares the age of ``heartbeat`` with the stall
limit it is given: a job whose wrapper lives but whose heartbeat stopped (the runner is
wedged or stopped) is reported ``stalled``, and the caller kills it (:func:`stall_script`).

Waiting is one remote command per segment that blocks until ``exit_code`` appears or
the wrapper is gone, so a waiting spec costs no SSH polling traffic; a dropped connection only ends a
segment and the caller reconnects (see the ``specfleet_job`` action plugin). The dispatch
strategy normally runs that wait only once the node's *watcher* (``WATCHER``, one process and
SSH session per node, see ``specfleet.dispatch.watch``) has said the job is no longer running.

This module only builds POSIX ``sh`` scripts and parses their output; the tests run
them with a real ``sh``.
"""
from __future__ import annotations

import base64
import re
import shlex
from dataclasses import dataclass

SAFE_COMPONENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
MAX_COMMAND_BYTES = 256 * 1024
TIMEOUT_EXIT = 124          # GNU timeout's status when the time limit hit
KILL_GRACE_S = 30           # SIGTERM, then SIGKILL this much later


class JobError(ValueError):
    pass


def shell_path(path: str) -> str:
    """``path`` quoted for ``sh``; a leading ``~/`` becomes ``"$HOME"/``."""
    if not path:
        raise JobError("empty path")
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    if path.startswith("~"):
        raise JobError(f"{path!r}: only ~/ (the login user's home) is supported")
    return shlex.quote(path)


def component(value: object, what: str) -> str:
    text = str(value)
    if not SAFE_COMPONENT.match(text) or text in (".", ".."):
        raise JobError(f"{what} {text!r} cannot be used in a path: letters, digits, '.', '_' and '-' only")
    return text


def _project_path(project: str) -> list[str]:
    # Project names may be folder paths ("team/app"): each part must be a safe component.
    return [component(part, "project") for part in str(project).split("/")]


def run_dir(root: str, project: str, task_id: str, attempt: int | str, run_id: str) -> str:
    """``<root>/runs/<project>/<task id>/<attempt>-<run id>``: unique even if the database is replaced."""
    return "/".join([root.rstrip("/") or "/", "runs", *_project_path(project), component(task_id, "task id"),
                     component(f"{attempt}-{run_id}", "attempt and run id")])


def workspace_dir(root: str, project: str, task_id: str, attempt: int | str, run_id: str) -> str:
    """``<root>/workspaces/<project>/<task id>/<attempt>-<run id>``: never shared by two attempts."""
    return "/".join([root.rstrip("/") or "/", "workspaces", *_project_path(project), component(task_id, "task id"),
                     component(f"{attempt}-{run_id}", "attempt and run id")])


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def command_script(command: str, workdir: str, env: dict[str, str]) -> str:
    if not command or not command.strip():
        raise JobError("the job's command is empty")
    lines = ["# written by specfleet: the job of one attempt"]
    for name, value in sorted(env.items()):
        if not ENV_NAME.match(name):
            raise JobError(f"environment variable name {name!r} is not valid")
        lines.append(f"export {name}={shlex.quote(str(value))}")
    lines += ['export SPECFLEET_RUN_DIR="$PWD"', f"cd {shell_path(workdir)} || exit 125",
              'export SPECFLEET_WORKSPACE="$PWD"', command, ""]
    script = "\n".join(lines)
    if len(script.encode()) > MAX_COMMAND_BYTES:
        raise JobError(f"the job's command is {len(script.encode())} bytes; at most {MAX_COMMAND_BYTES}")
    return script


WRAPPER = """\
cd "$(dirname "$0")" || exit 125
echo $$ > wrapper_pid.tmp && mv wrapper_pid.tmp wrapper_pid
date +%s.%N > started_at
setsid sh -c 'echo $$ > job_pid.tmp && mv job_pid.tmp job_pid && exec timeout -k {kill} {timeout} sh ./command.sh' \
    > output.log 2>&1 < /dev/null &
wait $!
rc=$?
# The slot is free only when every process of the job is gone, not just its shell.
pg=$(cat job_pid 2>/dev/null)
if [ -n "$pg" ]; then
    i=0
    while kill -0 -$pg 2>/dev/null && [ $i -lt {ticks} ]; do sleep 0.1; i=$((i+1)); done
    kill -KILL -$pg 2>/dev/null
fi
{on_exit}
date +%s.%N > ended_at
echo $rc > exit_code.tmp && mv exit_code.tmp exit_code
"""


# A shell function: the state of the job in run directory $1, from its files alone.
JOB_STATE = (
    'job_state() { if [ -e "$1/exit_code" ]; then echo finished; '
    'elif [ -e "$1/wrapper_pid" ]; then if kill -0 "$(cat "$1/wrapper_pid")" 2>/dev/null; '
    'then echo running; else echo lost; fi; else echo missing; fi; }\n'
)


def launch_script(run: str, workdir: str, command: str, env: dict[str, str], timeout_s: int,
                  on_exit: str = "") -> str:
    """Start the job unless this run directory already has one; print STARTED or ATTACHED.

    ``on_exit`` is shell run by the wrapper after the job's process group is gone and
    before ``exit_code`` is written (``$rc`` is the job's exit status), e.g. to finalise
    a status file the job could not finalise itself because it was killed.
    """
    if int(timeout_s) <= 0:
        raise JobError(f"timeout must be positive, not {timeout_s}")
    wrapper = WRAPPER.format(kill=KILL_GRACE_S, timeout=int(timeout_s), ticks=KILL_GRACE_S * 10,
                             on_exit=on_exit.strip() or ":")
    run_q, work_q = shell_path(run), shell_path(workdir)
    return (
        f"umask 077; mkdir -p {run_q} {work_q} && cd {run_q} || exit 1\n"
        # mkdir is atomic: of two launchers racing (an orphaned worker of a killed
        # controller and the run that adopted its job), exactly one starts the job.
        "mkdir launched 2>/dev/null || { echo ATTACHED; exit 0; }\n"
        f"printf %s {_b64(command_script(command, workdir, env))} | base64 -d > command.sh\n"
        f"printf %s {_b64(wrapper)} | base64 -d > wrapper.sh\n"
        "(setsid sh ./wrapper.sh < /dev/null > /dev/null 2>&1 &)\n"
        "i=0; while [ ! -e wrapper_pid ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done\n"
        "[ -e wrapper_pid ] && echo STARTED || { echo 'the job did not start' >&2; exit 1; }\n"
    )


# Node-side Python shared by the waiter and the watcher: the state of a run directory.
_NODE_HELPERS = """\
import os, sys, time
def read_in(run, name):
    try:
        with open(os.path.join(run, name)) as f:
            return f.read().strip()
    except OSError:
        return ""
def alive(pid):
    # A zombie waiting for init to reap it has ended: look at /proc before trusting kill -0.
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        pass
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except OSError:
        return True
def heartbeat_age_of(run):
    try:
        return time.time() - os.stat(os.path.join(run, "heartbeat")).st_mtime
    except OSError:
        return None
def stalled_at(run, stall):
    age = heartbeat_age_of(run)
    return stall > 0 and age is not None and age > stall and not os.path.exists(os.path.join(run, "stalled"))
def job_state(run, stall):
    # finished, lost, stalled or missing; None while the job runs.
    if os.path.exists(os.path.join(run, "exit_code")):
        return "finished"
    pid = read_in(run, "wrapper_pid")
    if not pid.isdigit():
        return "missing"
    if not alive(int(pid)):
        return "finished" if os.path.exists(os.path.join(run, "exit_code")) else "lost"
    return "stalled" if stalled_at(run, stall) else None
"""

WAITER = _NODE_HELPERS + """\
run, segment, stall = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
def read(name):
    return read_in(run, name)
deadline = time.monotonic() + segment
status = job_state(run, stall)
while status is None and time.monotonic() < deadline:
    time.sleep(0.2)
    status = job_state(run, stall)
if status == "missing":
    print("STATUS=missing")
    sys.exit(0)
status = status or "running"
age = heartbeat_age_of(run)
print("STATUS=" + status)
print("HEARTBEAT_AGE=" + ("" if age is None else "%.1f" % age))
print("STALLED=" + " ".join(read("stalled").split()))
print("EXIT=" + read("exit_code"))
print("STARTED=" + read("started_at"))
print("ENDED=" + read("ended_at"))
print("CANCELLED=%d" % os.path.exists(os.path.join(run, "cancelled")))
print("OUTPUT")
try:
    with open(os.path.join(run, "output.log"), "rb") as f:
        f.seek(0, 2)
        f.seek(max(0, f.tell() - 4096))
        sys.stdout.write(f.read().decode("utf-8", "replace"))
except OSError:
    pass
"""


def wait_script(run: str, segment_s: int, python: str = "python3", stall_s: float = 0) -> str:
    """Block until the job ends, stalls or ``segment_s`` passes; print one status block.

    The waiter is a small Python loop on the node (Ansible needs Python there anyway):
    one process per waiting spec, a ``stat`` every 0.2 s, no forks. ``stall_s`` > 0: a
    heartbeat older than that (while the job lives) ends the wait as ``stalled``.
    """
    return (f"{shlex.quote(python)} -c {shlex.quote(WAITER)} {shell_path(run)} {int(segment_s)} "
            f"{float(stall_s):g}\n")


WATCHER = _NODE_HELPERS + """\
# specfleet-node-watch: one per node and controller. Reads "watch <stall s> <run dir>" and
# "forget <run dir>" lines on stdin; prints "<state> <run dir>" once a watched job is no
# longer running (finished, lost, stalled, missing), and "ALIVE" every few seconds. Ends
# when stdin closes, i.e. when the controller or its SSH session goes away.
import select
tick, keepalive = float(sys.argv[1]), float(sys.argv[2])
watched, pending, said = {}, b"", time.monotonic()
print("READY", flush=True)
while True:
    ready = select.select([0], [], [], tick)[0]
    if ready:
        chunk = os.read(0, 65536)
        if not chunk:
            break
        *lines, pending = (pending + chunk).split(b"\\n")
        for line in lines:
            word, _, rest = line.decode("utf-8", "replace").partition(" ")
            if word == "watch":
                stall, _, run = rest.partition(" ")
                watched[run] = (os.path.expanduser(run), float(stall))
            elif word == "forget":
                watched.pop(rest, None)
    out = []
    for run, (path, stall) in list(watched.items()):
        now = job_state(path, stall)
        if now:
            del watched[run]
            out.append(now + " " + run)
    if time.monotonic() - said >= keepalive:
        out.append("ALIVE")
    if out:
        sys.stdout.write("\\n".join(out) + "\\n")
        sys.stdout.flush()
        said = time.monotonic()
"""


def watch_script(python: str = "python3", tick_s: float = 0.25, keepalive_s: float = 5.0) -> str:
    """The remote command of a node's watcher (see ``WATCHER``): one per node, not per spec.

    It lets the controller wait for every job on a node with one SSH session instead of
    one waiting worker process and session per job. Its lines are read by ``specfleet.dispatch.watch``.
    """
    return f"{shlex.quote(python)} -c {shlex.quote(WATCHER)} {float(tick_s):g} {float(keepalive_s):g}\n"


def _signal_script(run: str, marker: str, reason: str, grace_s: int, wake: bool) -> str:
    """Write ``marker`` (the reason), TERM the job's process group, KILL it after ``grace_s``."""
    wake_up = "kill -CONT -$pg 2>/dev/null; " if wake else ""
    return (
        f"cd {shell_path(run)} 2>/dev/null || exit 0\n"
        "[ -e exit_code ] && { echo ALREADY_ENDED; exit 0; }\n"
        f"printf '%s\\n' {shlex.quote(reason)} > {marker}\n"
        "[ -e job_pid ] || { echo NOT_STARTED; exit 0; }\n"
        f"pg=$(cat job_pid); {wake_up}kill -TERM -$pg 2>/dev/null\n"
        f"i=0; while kill -0 -$pg 2>/dev/null && [ $i -lt {int(grace_s) * 4} ]; do sleep 0.25; i=$((i+1)); done\n"
        "kill -KILL -$pg 2>/dev/null; echo SIGNALLED\n"
    )


def cancel_script(run: str, reason: str) -> str:
    """Mark the job cancelled and signal its process group (TERM, KILL after the grace)."""
    return _signal_script(run, "cancelled", reason, KILL_GRACE_S, wake=False)


def stall_script(run: str, reason: str, grace_s: int = 10) -> str:
    """Kill a job whose heartbeat stopped: mark it ``stalled``, wake it (CONT), TERM, KILL after ``grace_s``.

    A stopped process would sit on a TERM until continued; CONT lets the runner's own
    handler finalise its status. The wrapper then writes ``exit_code`` as usual.
    """
    return _signal_script(run, "stalled", reason, grace_s, wake=True)


@dataclass
class JobStatus:
    status: str                  # finished, running, stalled, lost, missing
    exit_code: int | None = None
    started_at: float | None = None
    ended_at: float | None = None
    cancelled: bool = False
    output_tail: str = ""
    heartbeat_age: float | None = None
    stalled: str = ""            # why it was killed as stalled (the ``stalled`` file)


def parse_wait(stdout: str) -> JobStatus:
    # The waiter prints KEY=value lines, a line "OUTPUT", then the end of the job's output.
    head, _, tail = stdout.partition("\nOUTPUT\n")
    fields: dict[str, str] = {}
    for line in head.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value.strip()
    status = fields.get("STATUS")
    if status not in ("finished", "running", "stalled", "lost", "missing"):
        raise JobError(f"unexpected answer from the node: {stdout[:200]!r}")

    def number(key: str) -> float | None:
        try:
            return float(fields[key])
        except (KeyError, ValueError):
            return None

    code = fields.get("EXIT")
    return JobStatus(status, int(code) if code not in (None, "") and code.lstrip("-").isdigit() else None,
                     number("STARTED"), number("ENDED"), fields.get("CANCELLED") == "1", tail,
                     number("HEARTBEAT_AGE"), fields.get("STALLED", ""))
