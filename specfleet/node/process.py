# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The attempt's processes: each agent or verify run in its own process group, as the agent user.

A run ends when it exits, when its time is up (the whole group is killed), or, for an
executor that is watched, when it is still going ``rate_limit_grace_s`` after its CLI first
reported retrying a rate limit (its own retries would hold the fallback executor back).
The process groups alive are listed in ``child_pgids`` so that the job wrapper can kill
them after a SIGKILL of the runner.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time

try:  # inside the controller's package
    from .executor import Executor
    from .runfiles import write_atomic
except ImportError:  # copied next to this file on a node
    from executor import Executor  # type: ignore[no-redef]
    from runfiles import write_atomic  # type: ignore[no-redef]

KILL_GRACE_S = 10
WATCH_OVERLAP = 4096          # bytes read again from before the last look: a line cut in two is still seen


def kill_group(pgid: int, grace: float = KILL_GRACE_S) -> None:
    """SIGTERM the process group, SIGKILL what is left after ``grace`` seconds."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class RateLimitWatch:
    """Reads a running CLI's output as it grows and remembers when it first reported retrying a rate limit."""

    def __init__(self, executor: Executor, raw_path: str, redact):
        self.executor, self.raw_path, self.redact = executor, raw_path, redact
        self.seen = 0
        self.line: str | None = None
        self.since: float | None = None

    def look(self, moment: float) -> None:
        if self.line is not None:
            return
        with open(self.raw_path, "rb") as handle:
            handle.seek(max(0, self.seen - WATCH_OVERLAP))
            fresh = handle.read(1 << 20)
        self.seen += max(0, len(fresh) - min(self.seen, WATCH_OVERLAP))
        self.line = self.executor.dialect.retrying(self.redact(fresh.decode("utf-8", "replace")),
                                                   self.executor.rate_limit_patterns)
        self.since = moment if self.line else None

    def expired(self, moment: float) -> bool:
        return bool(self.since and moment - self.since >= self.executor.rate_limit_grace_s)


class AttemptProcesses:
    """The process half of :class:`attempt.Attempt` (uses its ``path``, ``agent``, ``workspace``, ``redact``)."""

    children: set[int]

    def _record_children(self) -> None:
        write_atomic(self.path("child_pgids"), "".join(f"{p}\n" for p in sorted(self.children)), 0o644)

    def run_process(self, argv: list[str], log_name: str, timeout_s: float, stdin_path: str | None = None,
                    env: dict | None = None, watch: Executor | None = None) -> tuple[int, str, bool, str | None]:
        """Run as the agent user in its own process group; -> (rc, output, timed_out, rate-limit line).

        On timeout the whole group is killed. ``watch``: an executor whose output is read
        while it runs; a run still going ``rate_limit_grace_s`` after a rate-limit error line
        is stopped (the CLI's own retries would hold the fallback back).
        """
        log_path = self.path(log_name)
        raw_path = log_path + ".raw"
        stdin = open(stdin_path, "rb") if stdin_path else subprocess.DEVNULL
        started = time.monotonic()
        try:
            with open(raw_path, "wb") as out:
                proc = subprocess.Popen(argv, cwd=self.workspace, stdin=stdin, stdout=out, stderr=subprocess.STDOUT,
                                        env=env, start_new_session=True, preexec_fn=self.agent.preexec())
                self.children.add(proc.pid)
                self._record_children()
                watcher = RateLimitWatch(watch, raw_path, self.redact) if watch else None
                timed_out, stopped = self._wait(proc, started + timeout_s, watcher)
                # Children the command left behind in its group die with it.
                kill_group(proc.pid, grace=0)
                self.children.discard(proc.pid)
                self._record_children()
        finally:
            if stdin_path:
                stdin.close()
        with open(raw_path, "rb") as handle:
            output = self.redact(handle.read().decode("utf-8", "replace"))
        os.unlink(raw_path)
        elapsed = time.monotonic() - started
        why = " (timed out)" if timed_out else " (stopped: still retrying a rate limit)" if stopped else ""
        write_atomic(log_path, output + f"\n[specfleet] exit {proc.returncode}{why} after {elapsed:.1f} s\n", 0o644)
        return (124 if timed_out else proc.returncode), output, timed_out, (watcher.line if stopped else None)

    @staticmethod
    def _wait(proc: subprocess.Popen, deadline: float, watcher: RateLimitWatch | None) -> tuple[bool, bool]:
        """Wait for the run's end, its deadline, or its rate-limit grace; -> (timed out, stopped for a rate limit)."""
        while True:
            try:
                proc.wait(timeout=1.0 if watcher else max(0.0, deadline - time.monotonic()))
                return False, False
            except subprocess.TimeoutExpired:
                pass
            moment = time.monotonic()
            if watcher:
                watcher.look(moment)
            if moment >= deadline or (watcher and watcher.expired(moment)):
                timed_out = moment >= deadline
                kill_group(proc.pid)
                proc.wait()
                return timed_out, not timed_out

    def clean_env(self, home: str) -> dict:
        """What an agent or verify command sees: nothing of the runner's own environment but PATH and locale."""
        env = {"PATH": os.environ.get("PATH") or "/usr/local/bin:/usr/bin:/bin", "HOME": home, "USER": self.agent.name,
               "LOGNAME": self.agent.name, "LANG": os.environ.get("LANG") or "C.UTF-8", "TERM": "dumb", "NO_COLOR": "1",
               "CI": "1", "TMPDIR": os.path.join(home, "tmp"), "XDG_CONFIG_HOME": os.path.join(home, ".config"),
               "XDG_CACHE_HOME": os.path.join(home, ".cache"), "XDG_DATA_HOME": os.path.join(home, ".local", "share"),
               "XDG_STATE_HOME": os.path.join(home, ".local", "state"), "SPECFLEET_WORKSPACE": self.workspace}
        if os.environ.get("TZ"):
            env["TZ"] = os.environ["TZ"]
        return env

    def home(self, name: str) -> str:
        """A private HOME for the agent user below the run directory (kept: it holds the CLI's session)."""
        home = self.path(name)
        os.makedirs(os.path.join(home, "tmp"), mode=0o700, exist_ok=True)
        self.agent.own(home)
        return home

    def kill_children(self) -> None:
        for pgid in list(self.children):
            kill_group(pgid, grace=2)
