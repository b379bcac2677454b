"""What cleanup may delete on a node: listing with the real sh, decisions against real rows."""
from __future__ import annotations

import os
import subprocess

import pytest

from specfleet.dispatch import jobs
from specfleet.ops import cleanup


def listing(root, project="demo"):
    out = subprocess.run(["/bin/sh", "-c", cleanup.list_script(str(root), project)], capture_output=True, text=True,
                         check=True).stdout
    return cleanup.parse_listing(out, project)


def make_attempt(root, task, name, files=(), workspace=True):
    run = root / "runs" / "demo" / task / name
    run.mkdir(parents=True)
    for file, text in dict(files).items():
        (run / file).write_text(text)
    if workspace:
        (root / "workspaces" / "demo" / task / name).mkdir(parents=True)
    return run


def test_the_listing_reports_each_attempt_with_its_job_state_and_ignores_strangers(tmp_path):
    make_attempt(tmp_path, "S1", "1-run-a", {"exit_code": "0\n", "ended_at": "1000.5\n", "wrapper_pid": "1\n"})
    make_attempt(tmp_path, "S2", "1-run-a", {"wrapper_pid": "999999999\n"})  # wrapper gone, no exit code
    make_attempt(tmp_path, "S3", "2-run-b", {"wrapper_pid": f"{subprocess.os.getpid()}\n"})
    make_attempt(tmp_path, "S4", "1-run-c", workspace=True)  # never launched
    (tmp_path / "workspaces" / "demo" / "S5" / "1-run-d").mkdir(parents=True)  # a workspace alone
    (tmp_path / "runs" / "demo" / "S6" / "we ird").mkdir(parents=True)  # not a name we make
    entries, now = listing(tmp_path)
    assert now > 0
    summary = {key: (e.job, e.run_dir, e.workspace) for key, e in entries.items()}
    assert summary == {("S1", "1-run-a"): ("finished", True, True), ("S2", "1-run-a"): ("lost", True, True),
                       ("S3", "2-run-b"): ("running", True, True), ("S4", "1-run-c"): ("missing", True, True),
                       ("S5", "1-run-d"): ("none", False, True)}
    assert entries[("S1", "1-run-a")].ended == 1000.0 and entries[("S3", "2-run-b")].attempt == (2, "run-b")


def test_a_missing_work_root_lists_nothing(tmp_path):
    entries, now = listing(tmp_path / "nowhere")
    assert entries == {} and now > 0


def test_only_ended_known_unheld_old_attempts_whose_work_exists_elsewhere_may_go():
    done = cleanup.Entry("S1", "1-run-a", "finished", ended=1000.0, run_dir=True, workspace=True)
    ended = {"ended_at": 999.0, "commit_sha": "abc"}

    def decide(entry=done, attempt=ended, held=False, state="completed", elsewhere=True, now=5000.0, age=3600):
        return cleanup.decide(entry, now, age, attempt, held, state, lambda _a: elsewhere)

    assert decide() is None
    assert decide(entry=cleanup.Entry("S1", "1-run-a", "running", 1000.0)) == "its job is running"
    assert decide(attempt=None) == "unknown to this controller's state store"
    assert decide(held=True) == "a lease or leftover still holds it"
    assert decide(attempt={"ended_at": None}) == "its attempt has not ended in the state store"
    assert decide(now=2000.0).startswith("ended 0.3 h ago")
    # Bernstein #2792: a failure path never deletes the only copy of work.
    assert "never brought back" in decide(elsewhere=False, state="failed")
    assert decide(elsewhere=False, state="merged") is None
    assert decide(entry=cleanup.Entry("S1", "junk")) == "not an attempt directory"


def test_paths_are_built_from_checked_components_only():
    with pytest.raises(jobs.JobError, match="cannot be used in a path"):
        jobs.run_dir("/w", "demo", "../../etc", 1, "r")


def test_runner_directories_unused_for_the_age_are_stale_in_both_layouts(tmp_path):
    names = {"artifacts/20260101-000000-start-1": 5000, "artifacts/20260101-000000-start-2": 100,
             "20251231-000000-validate-3": 9000, "artifacts/not-a-run": 9000, "env": 9000}
    for name, age in names.items():
        (tmp_path / name).mkdir(parents=True, exist_ok=True)
        os.utime(tmp_path / name, (10_000 - age,) * 2)
    (tmp_path / "20251231-000000-cleanup-4").write_text("a file, not a run")
    os.utime(tmp_path / "artifacts", (0, 0))
    stale = cleanup.stale_runner_dirs(tmp_path, 3600, 10_000)
    assert [p.relative_to(tmp_path).as_posix() for p in stale] == ["20251231-000000-validate-3",
                                                                   "artifacts/20260101-000000-start-1"]
    assert cleanup.stale_runner_dirs(tmp_path / "nowhere", 0, 10_000) == []
