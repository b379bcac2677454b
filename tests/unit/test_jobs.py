"""The node-side job scripts, run with the real /bin/sh and python3 of this machine."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from specfleet.dispatch import jobs


def sh(script: str) -> subprocess.CompletedProcess:
    return subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def job(tmp_path):
    root = str(tmp_path / "work")

    def make(task="S1", attempt=1):
        return jobs.run_dir(root, "demo", task, attempt, "run-1"), jobs.workspace_dir(root, "demo", task, attempt, "run-1")
    return make


def wait(run: str, segment: int = 60) -> jobs.JobStatus:
    return jobs.parse_wait(sh(jobs.wait_script(run, segment)).stdout)


def test_a_job_runs_detached_in_its_workspace_and_reports_its_exit_code(job, tmp_path):
    run, work = job()
    hostile = f"it's $(touch {tmp_path}/pwned) `id` \"quoted\"\nline two"
    started = sh(jobs.launch_script(run, work, 'printf "%s|%s|%s" "$SPECFLEET_X" "$PWD" "$SPECFLEET_RUN_DIR"; exit 3',
                                    {"SPECFLEET_X": hostile}, 60))
    assert started.stdout.strip() == "STARTED", started.stderr
    status = wait(run)
    assert (status.status, status.exit_code) == ("finished", 3)
    assert status.output_tail == f"{hostile}|{work}|{run}"
    assert status.ended_at >= status.started_at
    assert oct(os.stat(run).st_mode & 0o777) == "0o700"
    assert not (tmp_path / "pwned").exists()


def test_starting_twice_attaches_to_the_first_job(job):
    run, work = job()
    sh(jobs.launch_script(run, work, "echo first", {}, 60))
    assert sh(jobs.launch_script(run, work, "echo second", {}, 60)).stdout.strip() == "ATTACHED"
    assert wait(run).output_tail == "first\n"


def test_a_segment_ends_while_the_job_still_runs(job):
    run, work = job()
    sh(jobs.launch_script(run, work, "sleep 30", {}, 60))
    assert wait(run, segment=1).status == "running"
    sh(jobs.cancel_script(run, "test over"))


def test_the_time_limit_kills_the_job(job):
    run, work = job()
    sh(jobs.launch_script(run, work, "sleep 60", {}, 1))
    assert wait(run).exit_code == jobs.TIMEOUT_EXIT


def test_cancel_signals_the_whole_group_and_is_recorded(job, tmp_path):
    run, work = job()
    marker = tmp_path / "grandchild-survived"
    sh(jobs.launch_script(run, work, f"(sleep 2; touch {marker}) & sleep 60", {}, 60))
    deadline = time.monotonic() + 10
    while not os.path.exists(f"{run}/job_pid") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sh(jobs.cancel_script(run, "by the test")).stdout.strip().endswith("SIGNALLED")
    status = wait(run)
    assert status.status == "finished" and status.cancelled and status.exit_code != 0
    assert Path(run, "cancelled").read_text() == "by the test\n"
    pgid = int(Path(run, "job_pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.killpg(pgid, 0)  # nothing of the job is left
    assert sh(jobs.cancel_script(run, "again")).stdout.strip() == "ALREADY_ENDED"
    assert not marker.exists()


def test_a_job_whose_supervisor_died_is_lost_and_a_missing_one_is_missing(job):
    run, work = job()
    sh(jobs.launch_script(run, work, "sleep 60", {}, 60))
    # The launch returns once the wrapper has written its pid; the job's pid follows (seen missing under load).
    deadline = time.monotonic() + 10
    while not Path(run, "job_pid").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(int(Path(run, "wrapper_pid").read_text()), signal.SIGKILL)
    os.killpg(int(Path(run, "job_pid").read_text()), signal.SIGKILL)
    deadline = time.monotonic() + 10
    status = wait(run, segment=1)
    while status.status == "running" and time.monotonic() < deadline:
        status = wait(run, segment=1)
    assert status.status == "lost"
    other, _ = job("S2")
    assert wait(other).status == "missing"


@pytest.mark.parametrize("task, attempt", [("../etc", 1), ("a/b", 1), ("", 1), ("ok", "1;rm -rf /"), (".", 1)])
def test_hostile_path_components_are_refused(task, attempt):
    with pytest.raises(jobs.JobError, match="cannot be used in a path"):
        jobs.run_dir("/w", "demo", task, attempt, "run")


def test_bad_environment_names_and_empty_commands_are_refused(job):
    run, work = job()
    with pytest.raises(jobs.JobError, match="not valid"):
        jobs.launch_script(run, work, "true", {"A;B": "x"}, 60)
    with pytest.raises(jobs.JobError, match="empty"):
        jobs.launch_script(run, work, "  ", {}, 60)
    with pytest.raises(jobs.JobError, match="unexpected answer"):
        jobs.parse_wait("Welcome to the machine\n")


def test_home_relative_roots_expand_on_the_node():
    assert jobs.shell_path("~/specfleet/runs") == '"$HOME"/specfleet/runs'
    assert sh(f"echo {jobs.shell_path('~/a b')}").stdout.strip() == os.path.expanduser("~/a b")
    with pytest.raises(jobs.JobError):
        jobs.shell_path("~other/x")


def test_a_heartbeat_that_stops_while_the_job_lives_is_read_as_stalled_and_the_job_killed(job):
    run, work = job()
    # A job that beats twice, then stops itself (SIGSTOP): alive, but its heartbeat goes stale.
    beat = 'for i in 1 2; do date +%s > "$SPECFLEET_RUN_DIR/heartbeat"; sleep 0.3; done; kill -STOP $$; echo woke'
    sh(jobs.launch_script(run, work, beat, {}, 60))
    assert wait(run, segment=5).status == "running"  # no stall limit: never stalled
    status = jobs.parse_wait(sh(jobs.wait_script(run, 30, stall_s=1.5)).stdout)
    assert status.status == "stalled" and status.heartbeat_age > 1.5
    assert sh(jobs.stall_script(run, "heartbeat stopped (test)", grace_s=2)).stdout.strip() == "SIGNALLED"
    final = jobs.parse_wait(sh(jobs.wait_script(run, 30, stall_s=1.5)).stdout)
    assert final.status == "finished" and final.stalled == "heartbeat stopped (test)"


def test_a_job_without_a_heartbeat_file_is_never_stalled(job):
    run, work = job()
    sh(jobs.launch_script(run, work, "sleep 3", {}, 60))
    assert jobs.parse_wait(sh(jobs.wait_script(run, 1, stall_s=0.5)).stdout).status == "running"
    sh(jobs.cancel_script(run, "test over"))
