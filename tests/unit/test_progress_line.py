"""The specfleet_progress callback's lines, counts and ETA, read from a real state store."""
from __future__ import annotations

import importlib.util
import re
import sqlite3
import sys
import time

import pytest

from specfleet.dispatch.leases import LeaseBook
from specfleet.dispatch.policy import NodeInfo
from specfleet.report import progress
from specfleet.store.core import Store
from tests.conftest import REPO_ROOT, spec_text
from tests.unit.test_leases import feed

_PATH = REPO_ROOT / "plugins" / "callback" / "specfleet_progress.py"
_SPEC = importlib.util.spec_from_file_location("specfleet_progress_under_test", _PATH)
callback = importlib.util.module_from_spec(_SPEC)  # the rendering (Live); the tracker is core
sys.modules[_SPEC.name] = callback
_SPEC.loader.exec_module(callback)

COLOUR = re.compile(r"\x1b\[[0-9;]*m")  # Ansible's colours, if the tests run on a terminal
NODES = [NodeInfo("n1", 1), NodeInfo("n2", 2), NodeInfo("n4", 4)]
TASKS = ["A", "B", "C", "D"]


class Clock:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def world(projects, tmp_path):
    """A project of four specs (B after A) in a real store, and a dispatch run over them."""
    store = Store(tmp_path / "state.db")
    feed(projects, store, **{
        "A.md": spec_text("A", estimate="2m", retries=1, modifies=["src/a.py"]),
        "B.md": spec_text("B", estimate="3m", modifies=["src/b.py"], depends_on=["A"]),
        "C.md": spec_text("C", estimate="1m", modifies=["src/c.py"]),
        "D.md": spec_text("D", estimate="10m", modifies=["src/d.py"]),
    })
    book = LeaseBook(store)
    book.open_run("demo")
    yield store, book
    store.close()


def tracker(store, book, plain=True):
    return progress.Tracker(store.path, "demo", book.run_id, TASKS, plain=plain).open()


def lines(track, changes=None):
    """Each change's line followed by the counts right after it."""
    out = []
    for change in track.poll() if changes is None else changes:
        counts = track.counts()
        out.append((track.change_line(change)[0], (counts.done, counts.running, counts.waiting, counts.failed)))
    return out


def states_in_store(store):
    marks = ",".join("?" * len(TASKS))
    return dict(store.db.execute(f"SELECT task_id, state FROM specs WHERE project = ? AND task_id IN ({marks})",
                                 ("demo", *TASKS)).fetchall())


def test_one_line_per_state_change_with_the_counts_right_after_it(world):
    store, book = world
    track = tracker(store, book)
    assert lines(track) == []  # nothing happened since the snapshot
    granted = {g.task_id: g for g in book.grant("demo", NODES).granted}
    assert set(granted) == {"A", "C", "D"}  # B waits for A
    started = lines(track)
    assert [text for text, _ in started] == [
        f"{t}  started   {granted[t].node} slot {granted[t].slot}  attempt 1" for t in ("D", "A", "C")]
    assert [counts for _, counts in started] == [(0, 1, 3, 0), (0, 2, 2, 0), (0, 3, 1, 0)]

    book.finish(granted["C"], True)
    book.finish(granted["A"], False, "the job exited with 1\nTraceback ...")  # retries: 1 -> queued
    assert lines(track) == [("C  completed", (1, 2, 1, 0)),
                            ("A  requeued: the job exited with 1", (1, 1, 2, 0))]
    again = book.grant("demo", NODES).granted
    assert [g.attempt for g in again] == [2] and lines(track)[0][0].endswith("attempt 2")
    book.finish(again[0], False, "verify failed")  # no retries left: A fails, B is blocked
    assert lines(track) == [("A  failed:   verify failed", (1, 1, 1, 1)),
                            ("B  blocked:  dependency A failed", (1, 1, 0, 2))]
    # The replayed states are the store's own.
    assert track.states == states_in_store(store)


def test_collected_specs_count_as_running_until_merged(world):
    store, book = world
    track = tracker(store, book, plain=False)
    grant = next(g for g in book.grant("demo", NODES).granted if g.task_id == "C")
    list(track.poll())
    book.finish(grant, True, keep_locks=True)
    store.transition("demo", "C", "verified")
    store.transition("demo", "C", "merged")
    assert lines(track) == [("C  collected", (0, 3, 1, 0)), ("C  verified", (0, 3, 1, 0)), ("C  merged", (1, 2, 1, 0))]


def test_progress_line_counts_slots_and_eta(world):
    store, book = world
    track = tracker(store, book)
    assert track.progress_line(elapsed=0, now=0) == (
        "done 0/4  running 0  waiting 4  failed 0  slots 0/0  elapsed 0s  eta ~16m")  # 16 min of work, 1 slot
    book.grant("demo", NODES)  # A (2m), C (1m), D (10m) start; B (3m) waits
    list(track.poll())
    now = max(track.running_since.values()) + 60
    # Remaining work: B 180 + A 120-60 + C max(60-60, 0) + D 600-60 = 780 s (a few ms less, as
    # the three started within the same pass), over the 3 slots this run holds: 260 s, ~5m.
    assert track.remaining_work(now) == pytest.approx(780, abs=0.1)
    assert track.progress_line(elapsed=65, now=now) == (
        "done 0/4  running 3  waiting 1  failed 0  slots 3/7  elapsed 1m05s  eta ~5m")
    # Leases of other runs count in the fleet's slots but not in this run's parallelism.
    other = LeaseBook(store)
    other.open_run("other", exclusive=False)
    store.db.execute("INSERT INTO slot_leases (node, slot, project, task_id, run_id, acquired_at, expires_at)"
                     " VALUES ('n1', 0, 'other', 'X', ?, 0, 9e9)", (other.run_id,))
    assert track.slots() == (4, 7, 3)
    # A node someone took out no longer counts among the slots.
    store.set_node_out("n4", "health", "disk full")
    assert track.slots() == (4, 3, 3)
    assert "slots 4/3" in track.progress_line(elapsed=0, now=now)


def test_eta_is_overdue_then_landing_then_a_dash_when_nothing_is_left(world):
    store, book = world
    track = tracker(store, book, plain=False)
    granted = {g.task_id: g for g in book.grant("demo", NODES).granted}
    list(track.poll())
    late = max(track.running_since.values()) + 3600
    for task in ("A", "C"):
        book.finish(granted[task], True)
        store.transition("demo", task, "verified")
        store.transition("demo", task, "merged")
    store.transition("demo", "B", "cancelled", reason="not needed")
    list(track.poll())
    assert track.eta(late, slots_held=1) == "overdue"  # D ran past its 10 minutes
    book.finish(granted["D"], True, keep_locks=True)
    list(track.poll())
    assert track.eta(late, slots_held=0) == "landing"  # D is collected, on its way to the merge
    store.transition("demo", "D", "verified")
    store.transition("demo", "D", "merged")
    list(track.poll())
    assert track.eta(late, slots_held=0) == "-"
    assert track.counts() == progress.Counts(done=3, running=0, waiting=0, failed=1, total=4)


@pytest.mark.parametrize(("seconds", "elapsed", "eta"), [
    (0, "0s", "~0s"), (40, "40s", "~40s"), (59.2, "59s", "~1m"), (60, "1m00s", "~1m"), (151, "2m31s", "~3m"),
    (3599, "59m59s", "~1h00m"), (3600, "1h00m", "~1h00m"), (3661, "1h01m", "~1h02m")])
def test_durations(seconds, elapsed, eta):
    assert progress.duration(seconds) == elapsed
    assert progress.estimate(seconds) == eta


def test_reasons_are_one_short_line():
    assert progress.short("\n  the job   exited\nwith 1") == "the job exited"
    assert progress.short("x" * 300) == "x" * 97 + "..."
    assert progress.short(None) == ""


def test_the_store_is_never_created_or_written(tmp_path):
    missing = tmp_path / "nowhere" / "state.db"
    with pytest.raises(sqlite3.OperationalError):
        progress.Tracker(missing, "demo", "r", ["A"]).open()
    assert not missing.parent.exists()


class Screen:
    """The real Ansible Display, writing into pytest's captured stdout."""

    def __init__(self, capsys):
        from ansible.utils.display import Display
        self.display = Display()
        self.capsys = capsys

    def read(self) -> str:
        return self.capsys.readouterr().out


def read(capsys) -> list[str]:
    return COLOUR.sub("", capsys.readouterr().out).splitlines()


def live(store, book, capsys, clock, interval=10.0, in_place=False, timestamps=False):
    return callback.Live(Screen(capsys).display, tracker(store, book), interval, timestamps, in_place, clock=clock)


def test_periodic_progress_lines_come_at_most_every_interval_and_after_each_change(world, capsys):
    store, book = world
    start = time.time()  # the clock is moved by hand, from now on (the store stamps events with real time)
    clock = Clock(start)
    out = live(store, book, capsys, clock)
    capsys.readouterr()
    for offset in (0, 5, 9.9):
        clock.now = start + offset
        out.pump()
    assert read(capsys) == []
    clock.now = start + 10
    out.pump()
    clock.now = start + 15
    out.pump()
    assert read(capsys) == ["done 0/4  running 0  waiting 4  failed 0  slots 0/0  elapsed 10s  eta ~16m"]
    book.grant("demo", NODES, only=["C"])
    clock.now = start + 16
    out.pump()  # a change prints its line and a progress line, and restarts the interval
    clock.now = start + 25
    out.pump()
    # Work left: A 2m + B 3m + D 10m waiting, C 1m minus the 16 s it ran: 944 s on 1 slot.
    assert read(capsys) == [
        "C  started   n4 slot 0  attempt 1", "done 0/4  running 1  waiting 3  failed 0  slots 1/7  elapsed 16s  eta ~16m"]
    clock.now = start + 26
    out.pump()
    assert read(capsys) == ["done 0/4  running 1  waiting 3  failed 0  slots 1/7  elapsed 26s  eta ~16m"]


def test_timestamps_and_in_place_progress_on_a_terminal(world, capsys):
    store, book = world
    start = time.time()
    clock = Clock(start)
    out = live(store, book, capsys, clock, interval=1.0, in_place=True, timestamps=True)
    out.counter.install()
    try:
        capsys.readouterr()
        clock.now = start + 1
        out.pump()
        clock.now = start + 2
        out.pump()  # nothing else was printed: the progress line is rewritten in place
        print("something else")
        clock.now = start + 3
        out.pump()  # something else was: a new line
        book.grant("demo", NODES, only=["C"])
        out.pump()  # the change replaces the progress line it follows
    finally:
        out.counter.remove()
    text = COLOUR.sub("", capsys.readouterr().out)
    up = callback.Live.CURSOR_UP_ERASE
    rows = text.splitlines()
    assert [row.startswith(up) for row in rows] == [False, True, False, False, True, False]
    assert rows[2] == "something else"
    stamp = r"\d\d:\d\d:\d\d"
    assert re.fullmatch(rf"\[{stamp}\] done 0/4 .*elapsed 1s  eta ~16m", rows[0])
    assert re.fullmatch(rf"{re.escape(up)}{stamp}  C  started   n4 slot 0  attempt 1", rows[4])
    assert "\r" not in text
