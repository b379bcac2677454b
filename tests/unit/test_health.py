"""The health guardian's probe (run by a real shell here) and its judgement."""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from specfleet.attempt.lifecycle import RUNNER_FILES
from specfleet.node.runner import runner_version
from specfleet.ops import health
from tests.conftest import REPO_ROOT

CORE = REPO_ROOT / "specfleet" / "node"


def work_root(tmp_path: Path) -> tuple[Path, Path]:
    """A bootstrapped work root and a bin folder with two CLIs (one broken)."""
    root = tmp_path / "work"
    (root / "runner").mkdir(parents=True)
    for name in RUNNER_FILES:
        shutil.copy(CORE / name, root / "runner" / name)
    (root / "node-info.json").write_text('{"clis": {"claude": "2.0.1"}}\n')
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "claude").write_text("#!/bin/sh\necho '2.0.5 (Claude Code)'\n")
    (bin_dir / "broken").write_text("#!/bin/sh\necho 'Error: cannot find module' >&2\nexit 1\n")
    for cli in bin_dir.iterdir():
        cli.chmod(0o755)
    return root, bin_dir


def probe(root: Path, bin_dir: Path, clis: list[dict], stale_after_h: float = 24) -> tuple[health.Probe, float, float]:
    script = health.probe_script(str(root), clis, stale_after_h, f"{bin_dir}")  # no /usr/bin: timeout still found
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=60)
    sent = time.time()
    clock = subprocess.run(["sh", "-c", health.CLOCK_SCRIPT], capture_output=True, text=True, timeout=60)
    return health.parse(clock.stdout + "\n" + out.stdout), sent, time.time()


def test_a_bootstrapped_node_with_its_clis_is_healthy_and_drift_is_a_warning(tmp_path):
    root, bin_dir = work_root(tmp_path)
    found, sent, answered = probe(root, bin_dir, [{"name": "claude"}])
    verdict = health.judge("n1", found, [{"name": "claude"}], sent, answered, runner_version(str(CORE)),
                           {"min_free_gib": 0.001})
    assert verdict.healthy, verdict.problems
    assert verdict.clis == {"claude": "2.0.5"} and verdict.runner == "ok" and abs(verdict.skew_s) < 5
    assert abs(verdict.free_bytes - shutil.disk_usage(root).free) < 512 * 1024 ** 2  # df's figure, in KiB
    assert verdict.warnings == ["claude changed since bootstrap: 2.0.1 -> 2.0.5"]


def test_missing_and_broken_clis_full_disk_and_pins_are_problems(tmp_path):
    root, bin_dir = work_root(tmp_path)
    clis = [{"name": "claude", "version": "2.0.1"}, {"name": "broken"}, {"name": "gone"}]
    found, sent, answered = probe(root, bin_dir, clis)
    verdict = health.judge("n1", found, clis, sent, answered, runner_version(str(CORE)),
                           {"min_free_gib": 10 ** 9, "strict_versions": True})
    assert not verdict.healthy and verdict.clis_ok == 1
    text = "; ".join(verdict.problems)
    assert "broken does not answer --version" in text and "gone is not installed" in text
    assert "below 1e+09 GiB" in text and "claude is 2.0.5, the inventory pins 2.0.1" in text


def test_clock_skew_beyond_the_limit_net_of_the_round_trip_is_a_problem():
    off = health.Probe(time=1000.0 + 45, free_bytes=100 * health.GIB, runner="x" * 12)
    verdict = health.judge("n1", off, [], 999.0, 1001.0, "x" * 12)
    assert verdict.skew_s == 45.0 and any("clock is +45.0 s off" in p for p in verdict.problems)
    # 31 s measured over a 4 s round trip may be 29 s: not enough to take a node out.
    near = health.Probe(time=1000.0 + 31, free_bytes=100 * health.GIB, runner="x" * 12, info={"clis": {}})
    assert health.judge("n1", near, [], 998.0, 1002.0, "x" * 12).healthy


def test_a_changed_runner_stale_workspaces_and_no_bootstrap_are_warnings(tmp_path):
    root, bin_dir = work_root(tmp_path)
    paths = root / "runner" / "paths.py"
    paths.write_text(paths.read_text() + "\n# an older runner\n")
    old = root / "workspaces" / "p" / "S01" / "1-r1"
    running = root / "workspaces" / "p" / "S02" / "1-r1"
    for ws in (old, running):
        ws.mkdir(parents=True)
        os.utime(ws, (time.time() - 3 * 3600, time.time() - 3 * 3600))
    run = root / "runs" / "p" / "S02" / "1-r1"
    run.mkdir(parents=True)
    (run / "wrapper_pid").write_text(str(os.getpid()))  # a live job: its workspace is not stale
    found, sent, answered = probe(root, bin_dir, [], stale_after_h=1)
    verdict = health.judge("n1", found, [], sent, answered, runner_version(str(CORE)), {"min_free_gib": 0.001})
    assert verdict.healthy and verdict.runner == "drift" and verdict.stale == 1
    assert found.stale == ["p/S01/1-r1"]
    (root / "node-info.json").unlink()
    found, sent, answered = probe(root, bin_dir, [], stale_after_h=1)
    never = health.judge("n1", found, [], sent, answered, runner_version(str(CORE)), {"min_free_gib": 0.001})
    assert "never bootstrapped (no node-info.json)" in never.warnings


def test_a_missing_work_root_and_an_unreachable_node_are_problems(tmp_path):
    found, sent, answered = probe(tmp_path / "nowhere", tmp_path, [])
    verdict = health.judge("n1", found, [], sent, answered, "x" * 12)
    assert any("work root is missing" in p for p in verdict.problems) and verdict.runner == "missing"
    gone = health.unreachable("n2", "Failed to connect\nssh: connect to host 192.0.2.1 port 22: Connection refused")
    assert gone.row()[1] == "unreachable" and gone.problems == [
        "unreachable: ssh: connect to host 192.0.2.1 port 22: Connection refused"]


def test_the_table_is_aligned_with_one_row_per_node():
    rows = [health.unreachable("node-10", "refused").row(),
            health.judge("n2", health.Probe(time=5.0, free_bytes=12 * health.GIB, runner="a" * 12,
                                            info={"clis": {}}), [], 5.0, 5.0, "a" * 12).row()]
    lines = health.table(rows)
    assert lines[0].split() == list(health.COLUMNS)
    assert lines[2].startswith("n2       healthy      12.0G  +0.0s  -     ok      0      -")
    assert len({line.index(line.split()[1]) for line in lines}) == 1  # HEALTH starts in one column
