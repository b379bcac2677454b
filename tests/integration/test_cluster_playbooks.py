"""bootstrap.yml and dispatch.yml against three real sshd worker nodes."""
from __future__ import annotations

import re
import sqlite3
import subprocess
from pathlib import Path

from tests.conftest import spec_text

LAYOUT = ("mirrors", "workspaces", "runs")


def recap(output: str) -> dict[str, dict[str, int]]:
    rows = re.findall(r"^(\S+)\s+: ((?:\w+=\d+\s*)+)$", output, re.M)
    return {host: {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", counts)} for host, counts in rows}


def work_root(cluster, name: str) -> Path:
    return Path(cluster.node(name).work_dir)


def test_bootstrap_limited_to_one_node_then_all_and_idempotent(cluster, fleet):
    run = fleet.playbook("bootstrap.yml", "--limit", "node-2")
    assert run.returncode == 0, run.output
    assert set(recap(run.output)) == {"node-2"}
    assert all((work_root(cluster, "node-2") / d).is_dir() for d in LAYOUT)
    assert not (work_root(cluster, "node-1") / "mirrors").exists()

    run = fleet.playbook("bootstrap.yml")
    assert run.returncode == 0, run.output
    for name in ("node-1", "node-2", "node-3"):
        assert all((work_root(cluster, name) / d).is_dir() for d in LAYOUT), name
    again = fleet.playbook("bootstrap.yml")
    assert again.returncode == 0
    assert {h: c["changed"] for h, c in recap(again.output).items()} == {"node-1": 0, "node-2": 0, "node-3": 0}


JOB = "-e", "specfleet_job_command=true"


def test_dispatch_replays_the_example_end_to_end_and_brings_back_every_branch(fleet):
    # The README's main job: no model key, so the replay executor applies recorded sessions;
    # the verify commands and gates run for real on the nodes.
    run = fleet.playbook("dispatch.yml", "-e", "project=clawmarketing", "-e", "specfleet_executor=replay", timeout=600)
    assert run.returncode == 0, run.output[-4000:]
    assert "clawmarketing: 8 specs in this run: 8 merged" in run.output
    repo = fleet.home / "repos" / "clawmarketing"
    db = sqlite3.connect(fleet.db)
    rows = db.execute("SELECT task_id, executor, commit_sha, branch FROM attempts WHERE project = 'clawmarketing'"
                      " AND outcome = 'succeeded'").fetchall()
    assert len(rows) == 8 and {r[1] for r in rows} == {"replay"}
    for task_id, _executor, commit, branch in rows:
        tip = subprocess.run(["git", "-C", str(repo), "rev-parse", branch], capture_output=True, text=True).stdout
        assert tip.strip() == commit, task_id
    # S08 started from the integration tip once S03 and S04 were merged: its branch holds both.
    tree = subprocess.run(["git", "-C", str(repo), "show", "specfleet/clawmarketing/S08-test-integration:"
                           "backend/routers/posts.py"], capture_output=True, text=True).stdout
    assert "def schedule_posts" in tree and "PermissionError" in tree
    # Every branch landed on integration through the merge queue, each batch tested with the
    # project's test command; the base branch waits for a person's review.
    git = ["git", "-C", str(repo)]
    integration = subprocess.run([*git, "rev-parse", "specfleet/clawmarketing/integration"], capture_output=True,
                                 text=True).stdout.strip()
    for _task_id, _executor, commit, _branch in rows:
        assert subprocess.run([*git, "merge-base", "--is-ancestor", commit, integration]).returncode == 0
    batches = db.execute("SELECT status, test_runs, tip_commit FROM batches ORDER BY id").fetchall()
    assert {b[0] for b in batches} == {"landed"} and batches[-1][2] == integration
    assert all(b[1] >= 1 for b in batches)
    main = subprocess.run([*git, "rev-parse", "main"], capture_output=True, text=True).stdout.strip()
    assert main != integration and subprocess.run([*git, "merge-base", "--is-ancestor", main, integration]).returncode == 0
    assert subprocess.run([*git, "status", "--porcelain"], capture_output=True, text=True).stdout == ""

    # The review queue, through its playbook: a person rejects S08, approves the rest.
    listed = fleet.playbook("playbooks/review.yml", "-e", "project=clawmarketing")
    assert listed.returncode == 0, listed.output[-3000:]
    assert "clawmarketing: 8 merged on specfleet/clawmarketing/integration, not on main" in listed.output
    assert re.search(r"S08-test-integration: \d+ files? changed.*verify: \d+ checks passed", listed.output)
    rejected = fleet.playbook("playbooks/review.yml", "-e", "project=clawmarketing", "-e", "reject=S08-test-integration",
                              "-e", "reason='name the test after the endpoint'", timeout=300)
    assert rejected.returncode == 0, rejected.output[-3000:]
    state, reason = db.execute("SELECT state, reason FROM specs WHERE task_id = 'S08-test-integration'").fetchone()
    assert state == "queued" and "name the test after the endpoint" in reason
    approved = fleet.playbook("playbooks/review.yml", "-e", "project=clawmarketing", "-e", "approve=all")
    assert approved.returncode == 0, approved.output[-3000:]
    promoted = subprocess.run([*git, "rev-parse", "main"], capture_output=True, text=True).stdout.strip()
    tested = {r[0] for r in db.execute("SELECT commit_sha FROM checks WHERE kind IN ('batch', 'revert') AND ok = 1")}
    assert promoted in tested
    assert subprocess.run([*git, "cat-file", "-e", f"{promoted}:tests/test_schedule_integration.py"],
                          capture_output=True).returncode != 0  # S08's file went with the revert
    # S08 runs again (the rejection is its feedback), lands, and a second approval promotes it.
    again = fleet.playbook("dispatch.yml", "-e", "project=clawmarketing", "-e", "specfleet_executor=replay", timeout=600)
    assert again.returncode == 0, again.output[-3000:]
    assert "clawmarketing: 1 specs in this run: 1 merged" in again.output
    prompt = db.execute("SELECT artifacts FROM attempts WHERE task_id = 'S08-test-integration' ORDER BY number DESC"
                        " LIMIT 1").fetchone()[0]
    assert "name the test after the endpoint" in (Path(prompt) / "prompt.md").read_text()
    assert fleet.playbook("playbooks/review.yml", "-e", "project=clawmarketing", "-e", "approve=all").returncode == 0
    assert subprocess.run([*git, "rev-parse", "main"], capture_output=True, text=True).stdout.strip() == \
        subprocess.run([*git, "rev-parse", "specfleet/clawmarketing/integration"], capture_output=True,
                       text=True).stdout.strip()


def test_dispatch_runs_the_example_in_order_then_has_nothing_left(fleet):
    run = fleet.playbook("dispatch.yml", "-e", "project=clawmarketing", *JOB)
    assert run.returncode == 0, run.output
    counts = recap(run.output)
    # Per node: the preflight ping and the settling of leftovers (none here).
    assert {h: counts[h]["ok"] for h in ("node-1", "node-2", "node-3")} == {"node-1": 2, "node-2": 2, "node-3": 2}
    assert "clawmarketing: 8 specs in this run: 8 completed" in run.output
    db = sqlite3.connect(fleet.db)
    states = db.execute("SELECT state, count(*) FROM specs WHERE project = 'clawmarketing' GROUP BY state").fetchall()
    assert states == [("completed", 8)]
    # Apart from the run's own start and end, a second dispatch writes nothing.
    quiet = "SELECT count(*) FROM events WHERE kind NOT IN ('run_started', 'run_ended')"
    events = db.execute(quiet).fetchone()[0]

    again = fleet.playbook("dispatch.yml", "-e", "project=clawmarketing", *JOB)
    assert again.returncode == 0, again.output
    assert recap(again.output)["localhost"]["changed"] == 0
    assert "clawmarketing: 0 specs in this run" in again.output
    assert db.execute(quiet).fetchone()[0] == events


def test_dispatch_of_an_invalid_project_queues_nothing_and_touches_no_node(fleet, tmp_path):
    folder = tmp_path / "specs" / "bad"
    folder.mkdir(parents=True)
    (folder / "project.yml").write_text(f"repository: {fleet.home / 'repos' / 'clawmarketing'}\nverify: x\n")
    (folder / "S01.md").write_text(spec_text("S01", modifies=["backend/app.py"]))
    (folder / "S02.md").write_text(spec_text("S02", modifies=["backend/app.py"], depends_on="S01"))
    run = fleet.playbook("dispatch.yml", "-e", "project=bad", "-e", f"specfleet_specs_root={tmp_path / 'specs'}", *JOB)
    assert run.returncode == 2
    assert "S02.md:4: field 'depends_on': value must be of type array, not 'S01'" in run.output
    assert "Check the worker nodes" not in run.output
    if fleet.db.exists():
        count = sqlite3.connect(fleet.db).execute("SELECT count(*) FROM specs WHERE project = 'bad'").fetchone()[0]
        assert count == 0


def test_unknown_host_in_limit_is_an_error(fleet):
    run = fleet.playbook("bootstrap.yml", "--limit", "node-9")
    assert run.returncode != 0
    assert "node-9" in run.output


def test_check_mode_reports_what_would_be_queued_and_writes_nothing(fleet):
    run = fleet.playbook("dispatch.yml", "--check", "-e", "project=clawmarketing", *JOB)
    assert run.returncode == 0, run.output
    assert recap(run.output)["localhost"]["changed"] == 1  # it would add the 8 specs
    count = sqlite3.connect(fleet.db).execute("SELECT count(*) FROM specs").fetchone()[0]
    assert count == 0
