# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a signal to ``specfleet`` does while its playbook runs: stop ansible-playbook and every process under it.

The process tree is read from /proc (:func:`descendants`); a pid is told apart from a reused
one by its start time.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

INTERRUPT_GRACE_S = 10    # from a signal to SIGKILL: time for ansible-playbook to close its run itself
SWEEP_GRACE_S = 5         # SIGTERM to SIGKILL for what is left of the tree once ansible-playbook is gone


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

