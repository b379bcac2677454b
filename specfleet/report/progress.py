# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A dispatch run's progress as the state store records it: state changes, counts, slots and ETA.

Plain Python (no Ansible); the ``specfleet_progress`` callback renders what :class:`Tracker`
says. Progress line::

    done 3/8  running 4  waiting 1  failed 0  slots 4/12  elapsed 2m31s  eta ~4m

``done`` counts the run's specs that are merged (completed, for plain jobs); ``running``
those running or on their way to the merge; ``waiting`` the queued ones; ``failed`` the
failed, blocked and cancelled ones. ``slots`` is the leases held fleet-wide over the slots
of the enabled nodes no one disabled. The ETA divides the remaining estimated work (see
:meth:`Tracker.remaining_work`) by the slots this run holds (at least 1).

The store is read through a :class:`~specfleet.store.progress.ReadOnlyStore`, which never
creates or writes the database.
"""
from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from specfleet.store.progress import ReadOnlyStore

# State -> progress column. DONE depends on the run: merged, or completed for plain jobs.
WAITING = frozenset({"queued"})
FAILED = frozenset({"failed", "blocked", "cancelled"})
LABEL_WIDTH = 9
# How a change line reads; the callback maps each tone to one of Ansible's colours.
OK, WARN, ERROR = "ok", "warn", "error"
REASON_CHARS = 100


def short(text: object, limit: int = REASON_CHARS) -> str:
    """The first non-empty line of ``text``, whitespace collapsed, at most ``limit`` characters."""
    lines = [" ".join(line.split()) for line in str(text or "").splitlines()]
    first = next((line for line in lines if line), "")
    return first if len(first) <= limit else first[:limit - 3].rstrip() + "..."


def duration(seconds: float) -> str:
    """``45s``, ``2m31s``, ``1h02m``."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def estimate(seconds: float) -> str:
    """An ETA, rounded up: ``~40s``, ``~4m``, ``~1h05m``."""
    seconds = math.ceil(seconds)
    if seconds < 60:
        return f"~{seconds}s"
    minutes = math.ceil(seconds / 60)
    if minutes < 60:
        return f"~{minutes}m"
    return f"~{minutes // 60}h{minutes % 60:02d}m"


@dataclass
class Change:
    """One state change of one spec of the run, as the store's ``events`` table has it."""

    event_id: int
    ts: float
    task_id: str
    from_state: str | None
    to_state: str
    detail: dict = field(default_factory=dict)


@dataclass
class Counts:
    done: int
    running: int
    waiting: int
    failed: int
    total: int


class Tracker:
    """The run's specs as the state store sees them: state changes, counts, slots and ETA.

    ``open`` takes one consistent snapshot (the specs' states and the newest event id); every
    ``poll`` then returns the ``state`` events written since, in order, and applies each to
    the snapshot, so the counts after a change are the counts right after that change, not
    whatever the store holds by the time the line is printed.
    """

    def __init__(self, db: str | Path, project: str, run_id: str, task_ids, plain: bool = False, clock=time.time):
        self.db_path = Path(db)
        self.project = project
        self.run_id = run_id
        self.task_ids = list(dict.fromkeys(task_ids))
        self.plain = plain
        self.clock = clock
        self.states: dict[str, str] = {}
        self.estimates: dict[str, int] = {}
        self.running_since: dict[str, float] = {}
        self.cursor = 0
        self.store: ReadOnlyStore | None = None

    # -- the store ------------------------------------------------------------------------

    def open(self) -> Tracker:
        """Take the snapshot; ``sqlite3.Error`` if the database cannot be read (it is never created)."""
        self.store = ReadOnlyStore(self.db_path)
        snapshot = self.store.progress_snapshot(self.project, self.task_ids)
        self.cursor = snapshot.cursor
        self.states, self.estimates, self.running_since = snapshot.states, snapshot.estimates, snapshot.running_since
        return self

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None

    def poll(self) -> Iterator[Change]:
        """The run's spec state changes since the last poll, in order; each is applied to the
        counts just before it is yielded, so counts read then are those right after it."""
        for event_id, ts, task_id, from_state, to_state, detail in self.store.state_changes_since(self.project,
                                                                                                  self.cursor):
            self.cursor = event_id
            if task_id not in self.states:
                continue
            change = Change(event_id, ts, task_id, from_state, to_state, detail)
            self.apply(change)
            yield change

    def apply(self, change: Change) -> None:
        self.states[change.task_id] = change.to_state
        if change.to_state == "running":
            self.running_since[change.task_id] = change.ts
        else:
            self.running_since.pop(change.task_id, None)

    def slots(self) -> tuple[int, int, int]:
        """(leases held fleet-wide, slots of enabled nodes nobody disabled, leases held by this run)."""
        return self.store.slot_usage(self.run_id)

    # -- what the lines say ---------------------------------------------------------------

    @property
    def done_states(self) -> frozenset[str]:
        return frozenset({"completed"}) if self.plain else frozenset({"merged"})

    def counts(self) -> Counts:
        done = running = waiting = failed = 0
        for state in self.states.values():
            if state in self.done_states:
                done += 1
            elif state in WAITING:
                waiting += 1
            elif state in FAILED:
                failed += 1
            else:  # running, and on the way to the merge (completed, verified, in_review, conflict)
                running += 1
        return Counts(done, running, waiting, failed, len(self.states))

    def remaining_work(self, now: float) -> float | None:
        """Seconds of estimated work left (None: nothing waits or runs)."""
        left = None
        for task_id, state in self.states.items():
            if state in WAITING:
                left = (left or 0) + self.estimates.get(task_id, 0)
            elif state == "running":
                since = self.running_since.get(task_id, now)
                left = (left or 0) + max(self.estimates.get(task_id, 0) - (now - since), 0)
            elif state not in self.done_states and state not in FAILED:
                left = left or 0  # landing: no estimate of its own, but the run is not over
        return left

    def eta(self, now: float, slots_held: int) -> str:
        left = self.remaining_work(now)
        if left is None:
            return "-"
        if left <= 0:  # running past their estimates, or only landing (verify, merge queue) left
            return "overdue" if "running" in self.states.values() else "landing"
        return estimate(left / max(1, slots_held))

    def progress_line(self, elapsed: float, now: float | None = None) -> str:
        now = self.clock() if now is None else now
        counts = self.counts()
        used, total, mine = self.slots()
        return (f"done {counts.done}/{counts.total}  running {counts.running}  waiting {counts.waiting}"
                f"  failed {counts.failed}  slots {used}/{total}  elapsed {duration(elapsed)}"
                f"  eta {self.eta(now, mine)}")

    def change_line(self, change: Change) -> tuple[str, str | None]:
        """The text (without the time) and tone (:data:`OK`, :data:`WARN`, :data:`ERROR` or None) of one change."""
        width = max((len(t) for t in self.states), default=0)
        label, rest, tone = self.describe(change)
        text = f"{change.task_id:<{width}}  {label:<{LABEL_WIDTH}} {rest}".rstrip()
        return text, tone

    def describe(self, change: Change) -> tuple[str, str, str | None]:
        detail, to, source = change.detail, change.to_state, change.from_state
        reason = short(detail.get("reason"))
        if to == "running":
            rest = f"{detail.get('node', '?')} slot {detail.get('slot', '?')}  attempt {detail.get('attempt', '?')}"
            if detail.get("adopted_from"):
                rest += f"  (adopting job run {detail['adopted_from']})"
            return "started", rest, None
        if to == "completed":
            return ("completed" if self.plain else "collected"), "", OK
        if to in ("verified", "merged"):
            return to, "", OK
        if to == "in_review":
            return "in review", "", WARN
        if to == "queued":
            if source in FAILED:
                return "queued", reason, WARN  # rescued by a person
            return "requeued:", reason, WARN
        return f"{to}:", reason, ERROR  # failed, blocked, cancelled, conflict


