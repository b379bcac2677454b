"""dispatch.yml with the specfleet_dag strategy on real sshd nodes of 1, 2 and 4 slots.

Each spec's job is tests/fixtures/probe_job.py: it registers itself on its node and in a
shared directory under a lock, fails on more jobs than slots or on an overlapping
``modifies`` of a running job, and logs start/end timestamps for the order checks.
"""
from __future__ import annotations

import json
import random
import re
import sqlite3
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, make_repo, spec_text
from tests.integration.conftest import GROUP_VARS, VENV_BIN, Controller, controller_env
from tools.localcluster import LocalCluster, NodeSpec, free_port

PROBE = REPO_ROOT / "tests" / "fixtures" / "probe_job.py"
SLOTS = {"node-1": 1, "node-2": 2, "node-3": 4}
REPO_FILES = ["src/app.py", "src/util.py", "src/lib/core.py", "docs/guide.md", "tests/test_app.py", "README.md",
              "pkg/__init__.py", "d/__init__.py", "c/__init__.py"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("dag-cluster")
    nodes = [NodeSpec(name, f"127.0.0.{40 + i}", free_port(f"127.0.0.{40 + i}"), slots)
             for i, (name, slots) in enumerate(SLOTS.items(), 1)]
    with LocalCluster(root / "c", nodes) as started:
        started.start()
        yield started


class Fleet:
    """A controller with its own home and database, and the probe's shared directory."""

    def __init__(self, cluster: LocalCluster, root: Path, grace: int = 120):
        self.cluster = cluster
        self.root = root
        self.home = root / "home"
        self.shared = root / "shared"
        for sub in ("slots", "durations", "fail", "fail_once", "running"):
            (self.shared / sub).mkdir(parents=True)
        for name, slots in SLOTS.items():
            (self.shared / "slots" / name).write_text(str(slots))
        inventory = cluster.write_inventory(root / "inventory" / "hosts.yml", group_vars_dir=GROUP_VARS)
        self.controller = Controller(self.home, controller_env(self.home, cluster.ansible_env(inventory)))
        self.grace = grace
        self.projects: dict[str, Path] = {}  # project -> its repository

    def project(self, name: str, specs: dict[str, dict]) -> None:
        repo = make_repo(self.root / f"repo-{name}", {path: "x\n" for path in REPO_FILES})
        folder = self.root / "specs" / name
        folder.mkdir(parents=True)
        (folder / "project.yml").write_text(f"repository: {repo}\nbase_branch: main\nverify: 'true'\n")
        for task, fields in specs.items():
            (folder / f"{task}.md").write_text(spec_text(task, estimate="1m", timeout="5m", **fields))
        self.projects[name] = repo

    def durations(self, values: dict[str, float]) -> None:
        for task, seconds in values.items():
            (self.shared / "durations" / task).write_text(str(seconds))

    def command(self, project: str, *args: str) -> list[str]:
        job = f"PROBE_REPOSITORY={self.projects[project]} /usr/bin/python3 {PROBE} {self.shared}"
        return [str(VENV_BIN / "ansible-playbook"), *args, "-e", f"project={project}",
                "-e", f"specfleet_specs_root={self.root / 'specs'}",
                "-e", json.dumps({"specfleet_job_command": job, "specfleet_node_grace": self.grace})]

    def dispatch(self, project: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(project, "dispatch.yml", *args), cwd=REPO_ROOT, env=self.controller.env,
                              capture_output=True, text=True, timeout=timeout, check=False)

    def start(self, project: str, playbook: str = "dispatch.yml", *args: str) -> subprocess.Popen:
        return subprocess.Popen(self.command(project, playbook, *args), cwd=REPO_ROOT, env=self.controller.env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def log(self) -> list[dict]:
        path = self.shared / "log.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def wait_for_starts(self, count: int, process: subprocess.Popen, timeout: float = 120) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            starts = [r for r in self.log() if r["event"] == "start"]
            if len(starts) >= count:
                return starts
            assert process.poll() is None, process.stdout.read()
            time.sleep(0.1)
        raise AssertionError(f"fewer than {count} jobs started within {timeout} s")

    def db(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.home / "state.db")
        db.row_factory = sqlite3.Row
        return db

    def states(self, project: str) -> dict[str, str]:
        rows = self.db().execute("SELECT task_id, state FROM specs WHERE project = ?", (project,))
        return {r["task_id"]: r["state"] for r in rows}


@pytest.fixture
def fleet(cluster, tmp_path) -> Fleet:
    return Fleet(cluster, tmp_path)


def recap(output: str) -> dict[str, dict[str, int]]:
    rows = re.findall(r"^(\S+)\s+: ((?:\w+=\d+\s*)+)$", output, re.M)
    return {host: {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", counts)} for host, counts in rows}


def random_project(seed: int, count: int, prefix: str = "T") -> tuple[dict[str, dict], dict[str, float]]:
    """A random DAG whose ``modifies`` mix files, directories and globs that overlap."""
    rng = random.Random(seed)
    shared_paths = ["src/app.py", "src/util.py", "src/lib/", "src/lib/core.py", "docs/*.md", "docs/guide.md",
                    "tests/", "tests/test_app.py", "README.md"]
    specs, durations = {}, {}
    for i in range(count):
        task = f"{prefix}{i:02d}"
        deps = sorted(rng.sample([f"{prefix}{j:02d}" for j in range(i)], k=min(i, rng.choice([0, 0, 1, 1, 2]))))
        modifies = [f"pkg/{task.lower()}.py"]
        if rng.random() < 0.45:
            modifies.append(rng.choice(shared_paths))
        specs[task] = {"depends_on": deps, "modifies": modifies, "priority": rng.choice([1, 2, 2, 3])}
        durations[task] = round(rng.uniform(0.2, 1.2), 2)
    return specs, durations


def check_log(log: list[dict], specs: dict[str, dict], project: str) -> None:
    starts = [r for r in log if r["event"] == "start" and r["project"] == project]
    problems = [p for r in starts for p in r["problems"]]
    assert problems == [], problems
    ends = {}
    for record in log:
        if record["event"] == "end" and record["project"] == project:
            ends[record["task"]] = max(ends.get(record["task"], 0), record["t"])
    for record in starts:
        for dep in specs[record["task"]]["depends_on"]:
            assert dep in ends and ends[dep] <= record["t"], f"{record['task']} started before {dep} ended"


def test_a_random_dag_runs_within_slots_locks_and_order(fleet):
    specs, durations = random_project(seed=7, count=36)
    fleet.project("dag", specs)
    fleet.durations(durations)
    run = fleet.dispatch("dag")
    assert run.returncode == 0, run.stdout[-4000:]
    log = fleet.log()
    check_log(log, specs, "dag")
    starts = [r for r in log if r["event"] == "start"]
    assert sorted(r["task"] for r in starts) == sorted(specs)
    # The probe counted concurrency: the fleet really ran specs side by side.
    assert max(r["on_node"] for r in starts if r["node"] == "node-3") >= 2
    assert fleet.states("dag") == {t: "completed" for t in specs}
    db = fleet.db()
    assert db.execute("SELECT COUNT(*) FROM slot_leases").fetchone()[0] == 0
    assert db.execute("SELECT COUNT(*) FROM path_locks").fetchone()[0] == 0
    assert db.execute("SELECT status FROM runs").fetchall()[0][0] == "ok"
    counts = recap(run.stdout)
    assert all(counts[t]["failed"] == 0 and counts[t]["ok"] == 2 for t in specs)
    assert "dag: 36 specs in this run: 36 completed" in run.stdout


@pytest.mark.parametrize("watch", [True, False], ids=["node-watchers", "worker-waits"])
def test_running_specs_wait_on_node_watchers_or_in_workers_with_the_same_outcome(fleet, watch):
    specs, durations = random_project(seed=11, count=12, prefix="W")
    fleet.project("watch", specs)
    fleet.durations({task: seconds + 1.0 for task, seconds in durations.items()})  # long enough to be parked
    run = fleet.dispatch("watch", "-vv", "-e", f"specfleet_node_watch={str(watch).lower()}")
    assert run.returncode == 0, run.stdout[-4000:]
    check_log(fleet.log(), specs, "watch")
    assert fleet.states("watch") == {t: "completed" for t in specs}
    parked, in_workers = map(int, re.search(r"specfleet_dag: (\d+) waits parked on node watchers, (\d+) left to "
                                            r"workers", run.stdout).groups())
    # Every spec's wait was parked on its node's watcher, or (watchers off) every one waited in a worker.
    assert (parked, in_workers) == ((len(specs), 0) if watch else (0, len(specs)))
    assert all(counts["failed"] == 0 and counts["ok"] == 2 for t, counts in recap(run.stdout).items() if t in specs)


def test_failure_blocks_descendants_retries_and_sets_the_exit_status(fleet):
    fleet.project("fail", {
        "S1": {}, "S2": {"retries": 0}, "S3": {"depends_on": ["S2"], "modifies": ["src/util.py"]},
        "S4": {"depends_on": ["S3"], "modifies": ["README.md"]}, "S5": {"modifies": ["docs/"]},
        "S6": {"depends_on": ["S1"], "modifies": ["tests/"]}, "S7": {"retries": 1, "modifies": ["src/lib/"]}})
    (fleet.shared / "fail" / "S2").touch()
    (fleet.shared / "fail_once" / "S7").touch()
    run = fleet.dispatch("fail")
    assert run.returncode == 2, run.stdout[-4000:]
    assert fleet.states("fail") == {"S1": "completed", "S2": "failed", "S3": "blocked", "S4": "blocked",
                                    "S5": "completed", "S6": "completed", "S7": "completed"}
    counts = recap(run.stdout)
    assert counts["S2"]["failed"] == 1
    assert counts["S3"]["skipped"] == 1 and counts["S4"]["skipped"] == 1
    # Two attempts (start, wait; start, wait), the first wait failed and is not held against it.
    assert counts["S7"]["failed"] == 0 and counts["S7"]["ok"] == 3
    assert "S3: not run: blocked: dependency S2 failed" in run.stdout
    assert "S2 failed: the job exited with 1" in run.stdout
    db = fleet.db()
    used = dict(db.execute("SELECT task_id, attempts_used FROM specs WHERE project = 'fail'").fetchall())
    assert used["S7"] == 1 and used["S2"] == 1 and used["S1"] == 0
    assert not any(r["task"] in ("S3", "S4") for r in fleet.log())
    # A person fixes S2 and rescues the project: only S2 and what it blocked run again.
    (fleet.shared / "fail" / "S2").unlink()
    rescue = subprocess.run(fleet.command("fail", "playbooks/rescue.yml"), cwd=REPO_ROOT, env=fleet.controller.env,
                            capture_output=True, text=True, timeout=300, check=False)
    assert rescue.returncode == 0, rescue.stdout[-3000:]
    assert "re-queued 3: S2, S3, S4" in rescue.stdout
    assert fleet.db().execute("SELECT attempts_used FROM specs WHERE task_id = 'S2'").fetchone()[0] == 0
    again = fleet.dispatch("fail")
    assert again.returncode == 0, again.stdout[-3000:]
    assert set(fleet.states("fail").values()) == {"completed"}
    starts = Counter(r["task"] for r in fleet.log() if r["event"] == "start")
    assert starts["S1"] == 1 and starts["S5"] == 1 and starts["S3"] == 1 and starts["S4"] == 1


def test_three_projects_at_once_share_the_slots_and_a_second_run_of_one_is_refused(fleet):
    projects = {name: random_project(seed=seed, count=count, prefix=prefix)
                for name, seed, count, prefix in (("alpha", 11, 18, "A"), ("beta", 12, 18, "B"), ("gamma", 13, 12, "G"))}
    for name, (specs, durations) in projects.items():
        fleet.project(name, specs)
        fleet.durations(durations)
    runs = {name: fleet.start(name) for name in projects}
    twin = fleet.start("alpha")  # the same project again, at the same time: exactly one of the two may run
    outputs = {name: p.communicate(timeout=600)[0] for name, p in runs.items()}
    twin_output = twin.communicate(timeout=600)[0]
    alphas = sorted([(runs["alpha"].returncode, outputs["alpha"]), (twin.returncode, twin_output)])
    assert [code for code, _ in alphas] == [0, 2], alphas[1][1][-3000:]
    assert "project alpha is already being dispatched by run" in alphas[1][1]
    assert "stop.yml -e project=alpha" in alphas[1][1]
    assert runs["beta"].returncode == runs["gamma"].returncode == 0, outputs["beta"][-2000:] + outputs["gamma"][-2000:]
    log = fleet.log()
    for name, (specs, _durations) in projects.items():
        check_log(log, specs, name)  # occupancy per node within slots, no overlapping locks, deps first
    # Each two of them were on the nodes at the same time (the slot counts were shared).
    spans = {name: [r["t"] for r in log if r["project"] == name] for name in projects}
    for first, second in (("alpha", "beta"), ("alpha", "gamma"), ("beta", "gamma")):
        assert min(spans[first]) < max(spans[second]) and min(spans[second]) < max(spans[first]), (first, second)
    assert sum(1 for r in log if r["event"] == "start") == 48


def test_drain_finishes_running_specs_and_starts_nothing_more(fleet):
    specs = {f"D{i}": {"modifies": [f"d/{i}.py"]} for i in range(12)}
    fleet.project("drain", specs)
    # Long enough that stop.yml (an ansible-playbook start-up, seconds on a loaded machine)
    # records the drain before the first wave of 7 ends and frees slots for the rest.
    fleet.durations({t: 8.0 for t in specs})
    process = fleet.start("drain")
    fleet.wait_for_starts(2, process)
    stop = subprocess.run(fleet.command("drain", "playbooks/stop.yml"), cwd=REPO_ROOT, env=fleet.controller.env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert stop.returncode == 0, stop.stdout
    output = process.communicate(timeout=300)[0]
    assert process.returncode == 2, output[-3000:]  # the report: not every spec ran
    started = {r["task"] for r in fleet.log() if r["event"] == "start"}
    ended = {r["task"] for r in fleet.log() if r["event"] == "end"}
    assert started == ended and 2 <= len(started) < 12
    states = fleet.states("drain")
    assert {t for t, s in states.items() if s == "completed"} == started
    assert {t for t, s in states.items() if s == "queued"} == set(specs) - started
    assert "not run: not started: drain requested by stop.yml" in output
    db = fleet.db()
    assert db.execute("SELECT COUNT(*) FROM slot_leases").fetchone()[0] == 0
    assert [tuple(r) for r in db.execute("SELECT status, stop FROM runs")] == [("stopped", "drain")]


def test_cancel_kills_running_jobs_and_requeues_them_without_using_attempts(fleet):
    specs = {f"C{i}": {"modifies": [f"c/{i}.py"]} for i in range(4)}
    fleet.project("cancel", specs)
    fleet.durations({t: 120 for t in specs})
    process = fleet.start("cancel")
    starts = fleet.wait_for_starts(4, process)
    stop = subprocess.run(fleet.command("cancel", "playbooks/stop.yml", "-e", "cancel=true"), cwd=REPO_ROOT,
                          env=fleet.controller.env, capture_output=True, text=True, timeout=200, check=False)
    assert stop.returncode == 0, stop.stdout
    output = process.communicate(timeout=60)[0]
    assert process.returncode == 2, output[-3000:]
    assert {r["task"] for r in fleet.log() if r["event"] == "end"} == {r["task"] for r in starts}, (fleet.log(), stop.stdout)
    leftover = subprocess.run(["pgrep", "-f", str(fleet.shared)], capture_output=True, text=True, check=False)
    assert leftover.stdout == ""
    assert "cancelled by stop.yml" in output
    assert fleet.states("cancel") == {t: "queued" for t in specs}
    db = fleet.db()
    assert db.execute("SELECT SUM(attempts_used) FROM specs").fetchone()[0] == 0
    assert {r[0] for r in db.execute("SELECT outcome FROM attempts")} == {"cancelled"}
    assert db.execute("SELECT COUNT(*) FROM slot_leases").fetchone()[0] == 0
    assert [tuple(r) for r in db.execute("SELECT status, stop FROM runs")] == [("stopped", "cancel")]


def test_a_node_cut_off_mid_run_is_quarantined_and_its_specs_rerun_elsewhere(cluster, tmp_path):
    fleet = Fleet(cluster, tmp_path, grace=3)
    specs = {f"K{i}": {"modifies": [f"pkg/k{i}.py"]} for i in range(10)}
    fleet.project("cut", specs)
    fleet.durations({t: 3.0 for t in specs})
    process = fleet.start("cut")
    node = cluster.node("node-3")
    try:
        deadline = time.monotonic() + 120
        while not any(r["node"] == "node-3" for r in fleet.log() if r["event"] == "start"):
            assert time.monotonic() < deadline and process.poll() is None, "nothing started on node-3"
            time.sleep(0.1)
        assert node.stop() == set()  # the sshd listener and every session under it
        cut_at = time.time()
        output = process.communicate(timeout=300)[0]
    finally:
        node.start()
        node.wait_ready(time.monotonic() + 30)
    assert process.returncode == 0, output[-4000:]
    assert fleet.states("cut") == {t: "completed" for t in specs}
    db = fleet.db()
    assert db.execute("SELECT health FROM nodes WHERE name = 'node-3'").fetchone()[0] == "quarantined"
    lost = {r["task_id"] for r in db.execute("SELECT task_id FROM attempts WHERE node = 'node-3' AND kind = 'infra'")}
    assert lost, "no attempt was charged to the cut-off node"
    assert db.execute("SELECT SUM(attempts_used) FROM specs").fetchone()[0] == 0
    for task in lost:  # each ran again, to the end, on another node
        final = db.execute("SELECT node, outcome FROM attempts WHERE task_id = ? ORDER BY number DESC", (task,)).fetchone()
        assert final["node"] != "node-3" and final["outcome"] == "succeeded"
    assert not [r for r in fleet.log() if r["event"] == "start" and r["node"] == "node-3" and r["t"] > cut_at + 1]
    assert "node quarantined" in output
    assert all(recap(output)[t]["unreachable"] == 0 for t in specs)
