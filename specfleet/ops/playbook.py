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
import json
import os
import re
import shlex
import shutil
import signal
import socket
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from specfleet.dispatch.leases import LeaseBook
from specfleet.model.settings import specfleet_home
from specfleet.ops.controller import REPO_ROOT, resolve_db
from specfleet.store.core import Store, StoreError

RUNNER_KEEP = 50          # ansible-runner's rotate_artifacts: run directories kept in $SPECFLEET_HOME/runner/artifacts
TICK_S = 1                # how often ansible-runner asks the cancel callback (its pexpect_timeout)
INTERRUPT_GRACE_S = 10    # from a signal to SIGKILL: time for ansible-playbook to close its run itself
SWEEP_GRACE_S = 5         # SIGTERM to SIGKILL for what is left of the tree once ansible-playbook is gone
SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?)$", re.IGNORECASE)
SHORTEST_SCRUBBED = 8     # shorter values ("1", "true") would be "found" all over the output
EXECUTORS_FILE = REPO_ROOT / "inventory" / "shared" / "executors.yml"

# ansible-playbook's argv[0] under ansible-runner: reads the secret variables from the pipe
# SecretPipe made, adds them to its environment and becomes the real ansible-playbook.
LAUNCHER = ("import json, os, sys; fifo = open(os.environ.pop('SPECFLEET_SECRETS_FIFO'), 'rb'); "
            "os.environ.update(json.load(fifo)); fifo.close(); os.execv(sys.argv[1], sys.argv[1:])")


def declared_secret_names(path: Path = EXECUTORS_FILE) -> frozenset[str]:
    """Both sides of every executor's ``env_from_vars``: what agents get and the vault variable behind it."""
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return frozenset()
    names: set[str] = set()
    for definition in (data.get("specfleet_executors") or {}).values():
        for env, var in ((definition or {}).get("env_from_vars") or {}).items():
            names.update((str(env), str(var)))
    return frozenset(names)


# Variables ansible-runner may record in ``artifacts/<ident>/command``: they say where and
# how things run, never what unlocks them. Every other variable (an executor's key whose
# name no pattern catches, say) reaches ansible-playbook through the pipe as well.
RECORDABLE = re.compile(r"(PATH|HOME|USER|LOGNAME|SHELL|LANG|LC_[A-Z]+|TERM|TZ|TMPDIR|PWD|SHLVL|VIRTUAL_ENV"
                        r"|PYTHONPATH|SSH_AUTH_SOCK|ANSIBLE_[A-Z0-9_]+|SPECFLEET_[A-Z0-9_]+)\Z")


def recordable(name: str, declared: frozenset[str] = frozenset()) -> bool:
    """May ansible-runner write this variable's value to disk?"""
    return RECORDABLE.match(name) is not None and not is_secret(name, declared)


def is_secret(name: str, declared: frozenset[str] = frozenset()) -> bool:
    """The one definition of a secret variable (environment or extra var): its name ends in
    KEY, TOKEN, SECRET, PASSWORD, PASSWD or CREDENTIAL(S), or an executor declares it."""
    return name in declared or SECRET_NAME.search(name) is not None


class Redactor:
    """Replaces the values of secret variables with ``<NAME redacted>`` in what goes to disk.

    A value is looked for as itself and as it appears inside a JSON string (escaped), so
    event files and the ``command`` artifact stay valid JSON after a replacement.
    """

    def __init__(self, secrets: Mapping[str, str]):
        forms: dict[bytes, bytes] = {}
        for name, value in secrets.items():
            if len(value) < SHORTEST_SCRUBBED:
                continue
            mark = f"<{name} redacted>".encode()
            for form in (value, json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]):
                with contextlib.suppress(UnicodeEncodeError):  # os.environ keeps undecodable bytes this way
                    forms.setdefault(form.encode("utf-8", "surrogateescape"), mark)
        # Longest first: a value that contains another is replaced whole.
        self.forms = sorted(forms.items(), key=lambda item: -len(item[0]))

    def scrub(self, data: bytes) -> bytes:
        for form, mark in self.forms:
            data = data.replace(form, mark)
        return data

    def event(self, event: dict) -> bool:
        """ansible-runner's event_handler: clean the event before it is written (True: write it)."""
        if self.forms:
            raw = json.dumps(event).encode()
            clean = self.scrub(raw)
            if clean != raw:
                data = json.loads(clean)
                event.clear()
                event.update(data)
        return True

    def tree(self, root: Path) -> list[Path]:
        """Scrub every file under ``root`` in place; -> the files that held a secret."""
        changed = []
        for path in sorted(root.rglob("*")) if self.forms and root.is_dir() else []:
            if path.is_symlink() or not path.is_file():
                continue
            try:
                raw = path.read_bytes()
                clean = self.scrub(raw)
                if clean != raw:
                    spare = path.with_name(path.name + ".scrub")
                    spare.write_bytes(clean)
                    os.chmod(spare, path.stat().st_mode & 0o777)
                    os.replace(spare, path)
                    changed.append(path)
            except OSError:
                continue
        return changed


class SecretPipe:
    """Hands secret variables to ansible-playbook through a FIFO, never through a file.

    ansible-runner records the environment it is given in ``artifacts/<ident>/command`` and
    offers no setting against it, so secrets are left out of that environment; LAUNCHER
    reads them from this pipe (ansible-runner hands an SSH key to ssh-agent the same way).
    The FIFO lives in a private temporary directory and holds no data once read.
    """

    def __init__(self, values: Mapping[str, str]):
        self.dir = tempfile.mkdtemp(prefix="specfleet-secrets-")
        self.path = os.path.join(self.dir, "fifo")
        os.mkfifo(self.path, 0o600)
        self._thread = threading.Thread(target=self._write, args=(json.dumps(dict(values)).encode(),), daemon=True)
        self._thread.start()

    def _write(self, data: bytes) -> None:
        with open(self.path, "wb") as fifo:  # blocks until the launcher opens it
            fifo.write(data)

    def close(self) -> None:
        if self._thread.is_alive():  # the launcher never ran: open the other end so the writer ends
            reader = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
            self._thread.join(timeout=5)
            os.close(reader)
        shutil.rmtree(self.dir, ignore_errors=True)


def _processes() -> dict[int, tuple[int, str, int]]:
    """Every process: pid -> (parent pid, state, start time), from /proc."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2:].split()  # the name in parentheses may hold spaces
        table[int(name)] = (int(fields[1]), fields[0].decode(), int(fields[19]))
    return table


def descendants(pid: int) -> dict[int, tuple[int, int]]:
    """Living descendants of ``pid``: pid -> (parent pid, start time, which tells a reused pid apart)."""
    table = _processes()
    children: dict[int, list[int]] = {}
    for child, (parent, _state, _start) in table.items():
        children.setdefault(parent, []).append(child)
    found: dict[int, tuple[int, int]] = {}
    todo = list(children.get(pid, []))
    while todo:
        child = todo.pop()
        if child in found:
            continue
        parent, state, start = table[child]
        if state != "Z":
            found[child] = (parent, start)
        todo += children.get(child, [])
    return found


def still_alive(known: Mapping[int, tuple[int, int]]) -> dict[int, tuple[int, int]]:
    table = _processes()
    return {pid: seen for pid, seen in known.items()
            if pid in table and table[pid][2] == seen[1] and table[pid][1] != "Z"}


def _send(pids: Iterable[int], signum: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except (ProcessLookupError, PermissionError):
            pass


class Interrupt:
    """What SIGINT, SIGTERM or SIGHUP to ``specfleet`` does while its playbook runs.

    1. The first signal reaches ansible-playbook as SIGINT, the one it handles: it passes it to
       its workers (each in a session of its own, so nothing sent to ansible-playbook's process
       group reaches them), the dispatch strategy closes its run and requeues what it held, and
       ansible-playbook exits.
    2. Until then the processes under ansible-playbook are remembered from /proc at every tick
       of ansible-runner's cancel callback: once ansible-playbook is gone its orphans cannot be
       told from anyone else's.
    3. ``grace`` seconds after the signal (at once after a second one) every remembered process
       still alive gets SIGKILL; once ansible-runner has returned, whatever is left gets SIGTERM
       and, ``SWEEP_GRACE_S`` later, SIGKILL.

    Processes that detach on purpose before the signal (the jobs on a node, ssh's
    ControlPersist masters) are no longer in the tree and are left alone. After SIGHUP the
    terminal is gone: output goes to /dev/null so that writing it cannot end the shutdown.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self, grace: float = INTERRUPT_GRACE_S):
        self.grace = grace
        self.signum: int | None = None
        self.playbook_pid: int | None = None  # ansible-playbook (the launcher execs into it)
        self.tree: dict[int, tuple[int, int]] = {}
        self._deadline = 0.0
        self._saved: dict[int, Any] = {}
        self._terminal = False
        self._before: set[int] = set()

    def install(self) -> None:
        self._terminal = os.isatty(1) or os.isatty(2)  # a hung-up terminal no longer says it is one
        self._before = set(descendants(os.getpid()))  # not ours to stop (specfleet used as a library)
        if threading.current_thread() is threading.main_thread():
            self._saved = {s: signal.signal(s, self._handle) for s in self.SIGNALS}

    def restore(self) -> None:
        for signum, handler in self._saved.items():
            signal.signal(signum, handler)
        self._saved = {}

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.signum is None:
            self.signum = signum
            self._deadline = time.monotonic() + self.grace
            if signum == signal.SIGHUP and self._terminal:
                quiet = os.open(os.devnull, os.O_WRONLY)
                os.dup2(quiet, 1)
                os.dup2(quiet, 2)
                os.close(quiet)
        else:
            self._deadline = time.monotonic()
        self._follow()

    def _follow(self) -> None:
        """Remember ansible-playbook's tree; the first time it is seen, send it SIGINT."""
        first = self.playbook_pid is None
        self._find()
        if first and self.playbook_pid is not None:
            _send([self.playbook_pid], signal.SIGINT)

    def _find(self) -> None:
        if self.playbook_pid is None:
            started = {pid: seen for pid, seen in descendants(os.getpid()).items()
                       if seen[0] == os.getpid() and pid not in self._before}
            if not started:
                return
            self.playbook_pid = min(started)
            self.tree[self.playbook_pid] = started[self.playbook_pid]
        if self.playbook_pid in still_alive(self.tree):
            self.tree.update(descendants(self.playbook_pid))

    def cancel(self) -> bool:
        """ansible-runner's cancel_callback: True once the grace is over (it SIGKILLs the group too)."""
        if self.signum is None:
            return False
        self._follow()
        if time.monotonic() < self._deadline:
            return False
        _send(still_alive(self.tree), signal.SIGKILL)
        return True

    def finish(self) -> None:
        """Nothing from the tree may outlive ``specfleet``: TERM, then KILL what is left."""
        self._find()  # also when ansible-runner failed without a signal, leaving ansible-playbook behind
        left = still_alive(self.tree)
        for signum in (signal.SIGTERM, signal.SIGKILL):
            _send(left, signum)
            deadline = time.monotonic() + SWEEP_GRACE_S
            while left and time.monotonic() < deadline:
                time.sleep(0.05)
                left = still_alive(left)


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
    ident = base = f"{time.strftime('%Y%m%d-%H%M%S')}-{command}-{os.getpid()}"
    for number in itertools.count(2):  # a second run of this process within the same second
        if not (root / "artifacts" / ident).exists():
            break
        ident = f"{base}.{number}"
    artifacts = root / "artifacts" / ident
    bindir = Path(sys.executable).parent  # the venv's ansible-playbook
    declared = declared_secret_names()
    secrets = {k: v for k, v in os.environ.items() if is_secret(k, declared)}
    redactor = Redactor(secrets)
    hidden = {k: v for k, v in os.environ.items() if not recordable(k, declared)}
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
            binary=sys.executable, cmdline=shlex.join(["-c", LAUNCHER, *argv]), extravars=extravars, envvars=env,
            suppress_env_files=True, fact_cache_type="memory", quiet=False,
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
