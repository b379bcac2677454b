"""The node watcher (jobs.WATCHER) and its controller end (specfleet.dispatch.watch), with real jobs and processes.

The watcher runs here through ``sh -c`` (as for a node reached with the local
connection); over SSH it is the same script behind one more pipe, which the dispatch
integration tests and benchmarks exercise.
"""
from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from specfleet.dispatch import jobs
from specfleet.dispatch.watch import NodeWatch, local_argv


def sh(script: str) -> subprocess.CompletedProcess:
    return subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, timeout=120, check=False)


class Watched:
    """A watcher on this machine and the reports it sends."""

    def __init__(self, tmp_path: Path, silence_s: float = 20.0, keepalive_s: float = 5.0):
        self.root = str(tmp_path / "work")
        self.events: queue.SimpleQueue = queue.SimpleQueue()
        self.wake = threading.Event()
        self.watch = NodeWatch("node-a", local_argv(jobs.watch_script(tick_s=0.05, keepalive_s=keepalive_s)),
                               self.events, self.wake, silence_s=silence_s)

    def start(self, task: str, command: str) -> str:
        run = jobs.run_dir(self.root, "demo", task, 1, "run-1")
        work = jobs.workspace_dir(self.root, "demo", task, 1, "run-1")
        assert sh(jobs.launch_script(run, work, command, {}, 60)).stdout.strip() == "STARTED"
        return run

    def next(self, timeout: float = 20) -> tuple:
        return self.events.get(timeout=timeout)


@pytest.fixture
def watched(tmp_path):
    made = Watched(tmp_path)
    yield made
    made.watch.close()


def test_jobs_are_reported_once_when_they_finish_and_not_while_they_run(watched):
    quick = watched.start("Q", "exit 3")
    slow = watched.start("S", "sleep 2")
    assert watched.watch.watch(slow, 0) and watched.watch.watch(quick, 0)
    assert watched.next() == ("node-a", quick, "finished")
    assert slow in watched.watch.watched  # still running: nothing said about it yet
    assert watched.next() == ("node-a", slow, "finished")
    assert Path(slow, "exit_code").read_text().strip() == "0"
    assert watched.wake.is_set() and not watched.watch.watched
    with pytest.raises(queue.Empty):
        watched.events.get(timeout=0.5)


def test_a_job_already_ended_and_a_run_without_a_job_are_reported_at_once(watched, tmp_path):
    done = watched.start("D", "true")
    deadline = time.monotonic() + 10
    while not Path(done, "exit_code").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    nothing = jobs.run_dir(watched.root, "demo", "N", 1, "run-1")
    watched.watch.watch(done, 0)
    watched.watch.watch(nothing, 0)
    assert {watched.next()[1:], watched.next()[1:]} == {(done, "finished"), (nothing, "missing")}


def test_a_job_whose_supervisor_died_is_lost(watched):
    run = watched.start("L", "sleep 60")
    deadline = time.monotonic() + 10
    while not Path(run, "job_pid").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    watched.watch.watch(run, 0)
    os.kill(int(Path(run, "wrapper_pid").read_text()), signal.SIGKILL)
    os.killpg(int(Path(run, "job_pid").read_text()), signal.SIGKILL)
    assert watched.next() == ("node-a", run, "lost")


def test_a_stopped_heartbeat_is_reported_stalled_only_with_a_limit(watched):
    beat = 'date +%s > "$SPECFLEET_RUN_DIR/heartbeat"; sleep 30'
    run = watched.start("H", beat)
    other = watched.start("H2", beat)
    watched.watch.watch(run, 0.5)
    watched.watch.watch(other, 0)  # no limit: a stale heartbeat is not a stall
    assert watched.next() == ("node-a", run, "stalled")
    assert watched.watch.watched == {other}
    sh(jobs.cancel_script(run, "test over"))
    sh(jobs.cancel_script(other, "test over"))
    assert watched.next() == ("node-a", other, "finished")


def test_forgotten_runs_are_not_reported(watched):
    run = watched.start("F", "sleep 1")
    watched.watch.watch(run, 0)
    watched.watch.forget(run)
    with pytest.raises(queue.Empty):
        watched.events.get(timeout=2.5)
    assert Path(run, "exit_code").exists()


def test_a_watcher_that_ends_or_falls_silent_is_broken_and_says_so(tmp_path):
    made = Watched(tmp_path)
    try:
        run = made.start("B", "sleep 30")
        made.watch.watch(run, 0)
        deadline = time.monotonic() + 10
        while not made.watch.ready and time.monotonic() < deadline:
            time.sleep(0.05)
        assert made.watch.broken() is None
        made.watch._proc.kill()  # the session dies (an SSH drop looks the same from here)
        assert made.next() == ("node-a", None, "broken")
        assert "ended" in made.watch.broken()
        assert not made.watch.watch(run, 0)  # a broken watcher takes nothing more
        sh(jobs.cancel_script(run, "test over"))
    finally:
        made.watch.close()
    # A watcher that says nothing for longer than its silence limit (keepalives every 60 s, limit 1 s).
    quiet = Watched(tmp_path / "quiet", silence_s=1.0, keepalive_s=60)
    try:
        deadline = time.monotonic() + 10
        while quiet.watch.broken() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "no word" in quiet.watch.broken()
        assert quiet.next() == ("node-a", None, "broken")
    finally:
        quiet.watch.close()


def test_closing_ends_the_node_side_process(watched):
    watched.watch.close()
    assert watched.watch._proc.returncode is not None
    with pytest.raises(queue.Empty):  # a deliberate close is not reported as a failure
        watched.events.get(timeout=0.2)


def test_a_run_directory_with_a_line_break_is_refused(watched):
    with pytest.raises(ValueError, match="line break"):
        watched.watch.watch("/w/runs/demo/a\nwatch 0 /etc", 0)
