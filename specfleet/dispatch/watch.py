# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The controller's end of a node watcher: one session per node reports jobs that stop running.

Without it every running spec waits in its own Ansible worker process (about 20 MB of
controller memory each, plus an SSH client) that blocks in the node-side waiter. With it
the dispatch strategy keeps a spec whose job is running *parked* before its wait step,
and one :class:`NodeWatch` per node (a long-lived command, over SSH in production, that
runs ``jobs.WATCHER``) says when the job has finished, died, stalled or vanished. Only
then does the wait step run, and it returns at once: the pipeline, its results and its
failure handling are unchanged.

The watcher is an optimisation with a safe fallback: if its session ends or falls silent
for ``silence_s``, :meth:`NodeWatch.broken` says why, and the strategy lets every spec it
had parked on that node wait in a worker as before (those waits ride out SSH drops and
decide whether the node is unreachable).
"""
from __future__ import annotations

import queue
import subprocess
import threading
import time

STATES = ("finished", "lost", "stalled", "missing")


class NodeWatch:
    """One watcher process (``argv``) for ``node``; its reports go to ``events`` as ``(node, run, state)``.

    ``state`` is one of :data:`STATES`, or ``"broken"`` (with ``run`` None) once the
    session is gone. ``wake`` (a ``threading.Event``) is set on every report so that a
    sleeping main loop can react at once.
    """

    def __init__(self, node: str, argv: list, events: queue.SimpleQueue, wake: threading.Event,
                 silence_s: float = 20.0):
        self.node, self.silence_s = node, silence_s
        self._events, self._wake = events, wake
        self._lock = threading.Lock()
        self._broken: str | None = None
        self.ready = False
        self.watched: set[str] = set()
        self.last_heard = time.monotonic()
        # stderr is not read: with ControlPersist a new SSH master inherits it and would
        # keep a pipe open for as long as it lives.
        self._proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL, bufsize=0)
        self._reader = threading.Thread(target=self._read, name=f"specfleet-watch-{node}", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self._proc.pid

    def broken(self) -> str | None:
        """Why this watcher can no longer be trusted, or None while it works."""
        if self._broken is None and time.monotonic() - self.last_heard > self.silence_s:
            self._fail(f"no word from the node's watcher for {self.silence_s:.0f} s")
        return self._broken

    def watch(self, run: str, stall_s: float) -> bool:
        """Ask to be told when the job in ``run`` stops running; False if the watcher is broken."""
        if "\n" in run:
            raise ValueError(f"run directory {run!r} has a line break")
        self.watched.add(run)  # before sending: the answer may come back at once
        if self._send(f"watch {float(stall_s):g} {run}\n"):
            return True
        self.watched.discard(run)
        return False

    def forget(self, run: str) -> None:
        if run in self.watched:
            self.watched.discard(run)
            self._send(f"forget {run}\n")

    def close(self) -> None:
        """End the session (stdin closed: the node side exits) and reap the process."""
        self._fail("closed")
        try:
            self._proc.stdin.close()
        except OSError:
            pass
        try:
            self._proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._reader.join(timeout=3)

    # -- internals --------------------------------------------------------------------------

    def _send(self, line: str) -> bool:
        with self._lock:
            if self._broken is not None:
                return False
            try:
                self._proc.stdin.write(line.encode())
                return True
            except (BrokenPipeError, OSError) as exc:
                failure = f"could not write to the node's watcher: {exc}"
        self._fail(failure)
        return False

    def _fail(self, reason: str) -> None:
        with self._lock:
            if self._broken is not None:
                return
            self._broken = reason
        if self._proc.poll() is None:
            try:
                self._proc.terminate()
            except OSError:
                pass
        if reason != "closed":
            self._events.put((self.node, None, "broken"))
            self._wake.set()

    def _read(self) -> None:
        stream = self._proc.stdout
        for raw in iter(stream.readline, b""):
            self.last_heard = time.monotonic()
            line = raw.decode("utf-8", "replace").rstrip("\n")
            if line == "READY":
                self.ready = True
                continue
            state, _, run = line.partition(" ")
            if state in STATES and run in self.watched:
                self.watched.discard(run)
                self._events.put((self.node, run, state))
                self._wake.set()
        code = self._proc.wait()
        self._fail(f"the node's watcher ended (exit code {code})")


def local_argv(script: str) -> list:
    """``argv`` that runs a watcher script on this machine (``sh -c``), for nodes reached locally."""
    return ["/bin/sh", "-c", "exec " + script.lstrip()]  # exec: the pid is the watcher's own

