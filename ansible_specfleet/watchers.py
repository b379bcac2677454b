# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Node watchers for the specfleet_dag strategy: running specs wait without a worker.

A running spec whose next step waits for its started job is *parked*: it is not handed to
the free loop, so it holds no worker process. One watcher per node (a single SSH session
running :func:`specfleet.dispatch.jobs.watch_script`, see :class:`NodeWatch`) reports when
a job has finished, died, stalled or vanished; the spec is then *released* and its wait
step runs in a worker and returns at once. A spec whose node has no working watcher (a
connection other than ssh or local, password authentication, a watcher that ended or fell
silent) is released at once and waits in a worker, as without watchers; a broken watcher
is replaced after :data:`WATCH_RETRY_S`.
"""
from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

from ansible.utils.display import Display

from specfleet.dispatch.watch import NodeWatch

display = Display()
WATCH_RETRY_S = 30  # a node whose watcher broke gets a new one after this long


class NodeWatchers:
    """The watchers of one run, which specs are parked on them and which wait in workers.

    ``argv_for(node)`` gives the command that runs a watcher on ``node`` (None: it cannot
    have one). ``wake`` is set when a watcher reports, to end the strategy's idle pause.
    """

    def __init__(self, argv_for: Callable[[str], list | None], enabled: bool = True):
        self.argv_for = argv_for
        self.enabled = enabled
        self.wake = threading.Event()
        self.parked: dict[str, tuple[str, str]] = {}  # host name -> (node, run directory)
        self.run_dirs: dict[str, str] = {}       # host name -> run directory of its started job
        self.released: set[str] = set()         # host names that wait in a worker this attempt
        self.counts = {"parked": 0, "released_to_workers": 0}
        self._watches: dict[str, NodeWatch | None] = {}  # node -> its watcher (None: cannot have one)
        self._failed: dict[str, float] = {}  # node -> when its watcher broke
        self._events: queue.SimpleQueue = queue.SimpleQueue()

    def may_park(self, name: str) -> bool:
        """The spec has a started job and was neither parked nor released for this attempt."""
        return name not in self.parked and name not in self.released and name in self.run_dirs

    def park(self, name: str, node: str, stall: Callable[[], float | None]) -> None:
        """Park ``name`` on ``node``'s watcher, or release it to a worker if that cannot be."""
        run = self.run_dirs[name]
        watch = self._watch_for(node) if self.enabled else None
        limit = stall() if watch is not None else None
        if limit is not None and watch.watch(run, limit):
            self.parked[name] = (node, run)
            self.counts["parked"] += 1
        else:
            self.released.add(name)
            self.counts["released_to_workers"] += 1

    def started(self, name: str, run_dir: str) -> None:
        self.run_dirs[name] = run_dir

    def forget(self, name: str) -> None:
        """The spec's job was waited on (or the spec ended): nothing of it stays parked or watched."""
        self.run_dirs.pop(name, None)
        self.released.discard(name)
        parked = self.parked.pop(name, None)
        if parked:
            watch = self._watches.get(parked[0])
            if watch is not None:
                watch.forget(parked[1])

    def take_events(self) -> None:
        """Release the parked specs whose jobs stopped running, and all of a node whose watcher broke."""
        for watch in self._watches.values():
            if watch is not None and watch.watched:
                watch.broken()  # notices a silent watcher
        while True:
            try:
                node, run, state = self._events.get_nowait()
            except queue.Empty:
                return
            if state == "broken":
                self._failed[node] = time.monotonic()
                released = [name for name, (where, _run) in self.parked.items() if where == node]
                if released:
                    display.warning(f"{node}: its node watcher stopped ({self._watches[node].broken()}); "
                                    f"{len(released)} running specs wait in workers instead")
            else:
                released = [name for name, where in self.parked.items() if where == (node, run)]
            for name in released:
                del self.parked[name]
                self.released.add(name)

    def close(self) -> None:
        for watch in self._watches.values():
            if watch is not None:
                watch.close()
        display.vv(f"specfleet_dag: {self.counts['parked']} waits parked on node watchers, "
                   f"{self.counts['released_to_workers']} left to workers")

    def _watch_for(self, node: str) -> NodeWatch | None:
        """The node's working watcher, started if need be; None if it has none now."""
        watch = self._watches.get(node, False)
        if watch is None:
            return None
        if watch and not watch.broken():
            return watch
        if time.monotonic() - self._failed.get(node, float("-inf")) < WATCH_RETRY_S:
            return None
        if watch:
            watch.close()
        argv = self.argv_for(node)
        try:
            self._watches[node] = NodeWatch(node, argv, self._events, self.wake) if argv else None
        except OSError as exc:  # e.g. the ssh executable cannot be run: try again later
            display.warning(f"{node}: cannot start a node watcher ({exc}); its specs wait in workers")
            self._watches.pop(node, None)
            self._failed[node] = time.monotonic()
            return None
        return self._watches[node]
