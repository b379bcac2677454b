# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Running a stage's playbook for the ``specfleet`` command, through ansible-runner.

ansible-runner keeps each run's events and output in ``$SPECFLEET_HOME/runner/artifacts/``,
the last RUNNER_KEEP runs; ``specfleet cleanup`` deletes those older than its age. Nothing
there holds the value of a secret variable (:func:`run`). Interrupted by SIGINT, SIGTERM or
SIGHUP, a run stops ansible-playbook and every process under it, and closes the dispatch run
it had open as ``interrupted`` (:class:`Interrupt`).
"""
from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import shlex
import signal
import socket
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

from specfleet.dispatch.leases import LeaseBook
from specfleet.model.settings import specfleet_home
from specfleet.ops import interrupt as _interrupt
from specfleet.ops import secret_vars as _secret_vars
from specfleet.ops.controller import REPO_ROOT, resolve_db
from specfleet.store.core import Store, StoreError

RUNNER_KEEP = 50          # ansible-runner's rotate_artifacts: run directories kept in $SPECFLEET_HOME/runner/artifacts
TICK_S = 1                # how often ansible-runner asks the cancel callback (its pexpect_timeout)

# Where they were before secret_vars.py and interrupt.py held them: the CLI and the tests use these names.
Interrupt = _interrupt.Interrupt
Redactor = _secret_vars.Redactor
SecretPipe = _secret_vars.SecretPipe
declared_secret_names = _secret_vars.declared_secret_names
is_secret = _secret_vars.is_secret
recordable = _secret_vars.recordable


class RunnerLock:
    """One process at a time rotates or deletes run directories under ``$SPECFLEET_HOME/runner``.

    ansible-runner rotates while it starts a run (after writing ``command``, before starting
    ansible-playbook); two doing it at once would both delete the oldest directory, and the
    loser would fail.
    """

    def __init__(self, root: Path):
        self.path = root / "rotate.lock"
        self._fd: int | None = None

    def __enter__(self) -> RunnerLock:
        self.acquire()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        self._fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _close_runs_of(db: Path, pid: int, status: str = "interrupted") -> list[str]:
    """Close the runs ansible-playbook ``pid`` opened and did not close (killed before it could)."""
    if not db.is_file():
        return []
    with Store(str(db)) as store:
        ids = store.open_runs_of(socket.gethostname(), pid)
        for run_id in ids:
            LeaseBook(store, run_id).close_run(status)
    return ids



def run(command: str, playbook: Path, extravars: dict[str, Any], limit: str | None = None,
        inventory: str | None = None, check: bool = False, progress: bool = False) -> int:
    """Run the command's playbook with ansible-runner; -> ansible-playbook's exit status, 128 + N after signal N.

    What ansible-runner 2.4 would write under ``$SPECFLEET_HOME/runner`` and what is done about it:

    * ``artifacts/<ident>/command``: the command line, and the whole environment it gives
      ansible-playbook. Secret variables (:func:`is_secret`) are not in that environment:
      :class:`SecretPipe` and LAUNCHER hand them over.
    * ``env/envvars``, ``env/extravars``, ``env/cmdline``, ``env/settings``: every argument
      given; not written (``suppress_env_files``). Extra vars go on the command line instead,
      which is why secret ones are refused before (see :func:`_extravars`).
    * ``artifacts/<ident>/job_events/``: event data (task arguments, results, output), cleaned
      before it is written (:meth:`Redactor.event`).
    * ``artifacts/<ident>/stdout`` and any file the run left: cleaned when it ends.
    * ``artifacts/<ident>/fact_cache/``: every host's facts, its environment included; facts
      stay in memory instead.

    ``rotate_artifacts`` keeps the RUNNER_KEEP most recently active runs; a run touches its
    own directory at every tick, so a long dispatch is never rotated away.
    """
    try:
        import ansible_runner
    except ImportError:
        print("specfleet: ansible-runner is not installed (scripts/setup.sh installs it)", file=sys.stderr)
        return 2
    root = specfleet_home() / "runner"
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    ident = _new_ident(root, command)
    artifacts = root / "artifacts" / ident
    declared = declared_secret_names()
    redactor = Redactor({k: v for k, v in os.environ.items() if is_secret(k, declared)})
    hidden = {k: v for k, v in os.environ.items() if not recordable(k, declared)}
    argv, env = _command(playbook, limit, inventory, check, progress)
    pipe = SecretPipe(hidden)
    env["SPECFLEET_SECRETS_FIFO"] = pipe.path
    lock = RunnerLock(root)
    interrupt = Interrupt()

    def keep_alive_or_cancel() -> bool:
        with contextlib.suppress(OSError):
            os.utime(artifacts)
        return interrupt.cancel()

    saved = {name: os.environ.pop(name) for name in hidden}  # ansible-runner copies os.environ
    old_path = os.environ.get("PATH", "")
    os.environ["PATH"] = env["PATH"]
    interrupt.install()
    try:
        lock.acquire()
        result = ansible_runner.run(
            private_data_dir=str(root), ident=ident, rotate_artifacts=RUNNER_KEEP, project_dir=str(REPO_ROOT),
            binary=sys.executable, cmdline=shlex.join(["-c", _secret_vars.LAUNCHER, *argv]), extravars=extravars,
            envvars=env, suppress_env_files=True, fact_cache_type="memory", quiet=False,
            settings={"suppress_ansible_output": False, "pexpect_timeout": TICK_S},
            event_handler=redactor.event, cancel_callback=keep_alive_or_cancel,
            status_handler=lambda data, runner_config=None: lock.release() if data["status"] == "running" else None)
    finally:
        lock.release()
        interrupt.finish()
        interrupt.restore()
        pipe.close()
        os.environ.update(saved)
        os.environ["PATH"] = old_path
        redactor.tree(artifacts)
    return _ended(command, result, interrupt, extravars, artifacts)


def _new_ident(root: Path, command: str) -> str:
    """A run directory name no run has used: the time, the command, this process (and a number if taken)."""
    ident = base = f"{time.strftime('%Y%m%d-%H%M%S')}-{command}-{os.getpid()}"
    for number in itertools.count(2):  # a second run of this process within the same second
        if not (root / "artifacts" / ident).exists():
            break
        ident = f"{base}.{number}"
    return ident


def _command(playbook: Path, limit: str | None, inventory: str | None, check: bool,
             progress: bool) -> tuple[list[str], dict[str, str]]:
    """ansible-playbook's argv and the environment ansible-runner gives it (secrets come through the pipe)."""
    bindir = Path(sys.executable).parent  # the venv's ansible-playbook
    # ansible-runner puts its own callback directory in ANSIBLE_CALLBACK_PLUGINS, which would hide
    # ansible.cfg's: name ours here and the runner appends its own after it.
    env = {"PATH": f"{bindir}:{os.environ.get('PATH', '/usr/bin:/bin')}", "ANSIBLE_FORCE_COLOR": "0",
           "ANSIBLE_CONFIG": str(REPO_ROOT / "ansible.cfg"),
           "ANSIBLE_CALLBACK_PLUGINS": str(REPO_ROOT / "plugins" / "callback")}
    if not sys.stdout.isatty():  # ansible-runner gives ansible a pty: say there is no terminal to draw on
        env["ANSIBLE_NOCOLOR"] = "1"
    if progress and (REPO_ROOT / "plugins" / "callback" / "specfleet_progress.py").is_file():
        env["ANSIBLE_STDOUT_CALLBACK"] = "specfleet_progress"  # one line per spec change, not per task
    argv = [str(bindir / "ansible-playbook"), str(playbook)]
    if limit:
        argv += ["--limit", limit]
    if inventory:
        argv += ["-i", str(Path(inventory).expanduser().resolve())]
    if check:
        argv.append("--check")
    return argv, env


def _ended(command: str, result: Any, interrupt: Interrupt, extravars: dict[str, Any], artifacts: Path) -> int:
    """Say how the run ended; after a signal, close the dispatch run ansible-playbook left open. -> the exit status."""
    if interrupt.signum is None:
        print(f"specfleet {command}: {result.status} (exit {result.rc}); events and output in {artifacts}",
              file=sys.stderr)
        return int(result.rc if result.rc is not None else 1)
    closed = []
    if interrupt.playbook_pid is not None:
        try:
            closed = _close_runs_of(resolve_db(extravars.get("specfleet_db")), interrupt.playbook_pid)
        except (StoreError, sqlite3.Error) as exc:
            print(f"specfleet: could not close the interrupted run in the state store: {exc}", file=sys.stderr)
    name = signal.Signals(interrupt.signum).name
    print(f"specfleet {command}: interrupted by {name}; ansible-playbook and its workers are stopped"
          + (f", run {', '.join(closed)} closed as interrupted" if closed else "")
          + f"; events and output in {artifacts}", file=sys.stderr)
    return 128 + interrupt.signum
