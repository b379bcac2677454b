"""Fault injection on real sshd nodes: nothing lost, nothing run twice.

Every scenario runs the real dispatch.yml with the real agent runner; only the model is
fake (tests/fixtures/fake_agent.py). The fake agent appends one line per invocation to a
ledger file *on the node*, which is the evidence of how many agents really ran.

* the controller (ansible-playbook and its workers) is SIGKILLed at 10 points of a
  40-spec run and dispatch is run again each time;
* a node's sshd and sessions are killed mid-run and it comes back later;
* a node's sshd processes are stopped (SIGSTOP): a hung node;
* a runner is wedged (SIGSTOP) so its heartbeat stops while its processes live;
* cleanup after all that keeps whatever was never brought back.
"""
from __future__ import annotations

import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, git, make_repo, spec_text
from tests.integration.conftest import GROUP_VARS, VENV_BIN, controller_env
from tools.localcluster import LocalCluster, NodeSpec, descendants, free_port, proc_of

FAKE = REPO_ROOT / "tests" / "fixtures" / "fake_agent.py"
SEED = int(os.environ.get("SPECFLEET_FAULT_SEED", "20261121"))
SHARED = ["src/app.py", "src/lib/", "docs/*.md", "README.md"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("fault-cluster")
    nodes = [NodeSpec(f"node-{i}", f"127.0.0.{60 + i}", free_port(f"127.0.0.{60 + i}"), 4) for i in (1, 2, 3)]
    with LocalCluster(root / "c", nodes) as started:
        started.start()
        yield started


class Site:
    """A controller home with fake CLIs, a node-side ledger and fast failure detection."""

    def __init__(self, cluster: LocalCluster, root: Path, **overrides):
        self.cluster, self.root = cluster, root
        self.home, self.specs, self.ledger = root / "home", root / "specs", root / "ledger.jsonl"
        (root / "bin").mkdir(parents=True)
        (root / "bin" / "claude").symlink_to(FAKE)
        self.scenario = root / "scenario.json"
        self.scenario.write_text("{}")
        env = {"FAKE_AGENT_SCENARIO": str(self.scenario), "FAKE_AGENT_LEDGER": str(self.ledger)}
        self.vars = root / "vars.json"
        self.vars.write_text(json.dumps({
            "specfleet_specs_root": str(self.specs), "specfleet_default_executor": "claude",
            "specfleet_node_grace": 3, "specfleet_step_timeout": 60, "specfleet_heartbeat_interval": 1,
            "specfleet_stall_timeout": 6,
            "specfleet_executors": {"claude": {"command": [str(root / "bin" / "claude"), "--print"], "env": env}},
            **overrides}))
        inventory = cluster.write_inventory(root / "inventory" / "hosts.yml", group_vars_dir=GROUP_VARS)
        # Keepalives that notice a hung node in ~3 s; masters of their own (trap: an old master
        # keeps the options it was started with).
        self.env = controller_env(self.home, dict(
            cluster.ansible_env(inventory), ANSIBLE_SSH_CONTROL_PATH_DIR=str(root / "cp"),
            ANSIBLE_SSH_ARGS="-o ControlMaster=auto -o ControlPersist=60s -o ServerAliveInterval=1"
                             " -o ServerAliveCountMax=2 -o ConnectTimeout=4 -o BatchMode=yes"))

    def project(self, name: str, specs: dict[str, dict], calls: dict[str, list]) -> Path:
        files = {"src/app.py": "APP = 1\n", "src/lib/core.py": "\n", "docs/guide.md": "# guide\n", "README.md": "# r\n",
                 "pkg/__init__.py": ""}
        repo = make_repo(self.root / f"repo-{name}", files)
        folder = self.specs / name
        folder.mkdir(parents=True)
        (folder / "project.yml").write_text(f"repository: {repo}\nrequire_tests: false\n")
        for task, fields in specs.items():
            (folder / f"{task}.md").write_text(spec_text(task, estimate="1m", timeout="2m", **fields))
        scenario = json.loads(self.scenario.read_text())
        scenario.update(calls)
        self.scenario.write_text(json.dumps(scenario))
        return repo

    def start(self, project: str, *extra: str) -> subprocess.Popen:
        # A session of its own, so the whole controller (main process and workers) can be killed.
        return subprocess.Popen([str(VENV_BIN / "ansible-playbook"), "dispatch.yml", "-e", f"project={project}",
                                 "-e", f"@{self.vars}", *extra], cwd=REPO_ROOT, env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)

    def run(self, project: str, timeout: int = 600) -> tuple[int, str]:
        process = self.start(project)
        output = process.communicate(timeout=timeout)[0]
        return process.returncode, output

    def db(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.home / "state.db")
        db.row_factory = sqlite3.Row
        return db

    def states(self, project: str) -> dict[str, str]:
        return {r["task_id"]: r["state"] for r in self.db().execute("SELECT task_id, state FROM specs WHERE project = ?",
                                                                     (project,))}

    def ledger_lines(self) -> list[dict]:
        """One record per agent started on a node (written there by the fake agent)."""
        return [json.loads(line) for line in self.ledger.read_text().splitlines()] if self.ledger.exists() else []

    def ran(self, project: str) -> Counter:
        """How many agents ran per (task, attempt, run), from the node-side ledger."""
        return Counter((r["task"], r["attempt"], r["run"]) for r in self.ledger_lines() if r["project"] == project)

    def wait_for_agent_on(self, node: str, process: subprocess.Popen, timeout: float = 120) -> None:
        """Block until an agent has started on ``node`` (``process`` must keep running meanwhile)."""
        deadline = time.monotonic() + timeout
        while not any(f"/{node}/" in r["workspace"] for r in self.ledger_lines()):
            assert time.monotonic() < deadline and process.poll() is None, f"no agent started on {node}"
            time.sleep(0.1)

    def events(self, kind: str) -> list[dict]:
        return [dict(r, detail=json.loads(r["detail_json"]))
                for r in self.db().execute("SELECT * FROM events WHERE kind = ? ORDER BY id", (kind,))]

    def held(self) -> dict[str, int]:
        db = self.db()
        return {table: db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                for table in ("slot_leases", "path_locks", "leftovers")}


def dag(prefix: str, count: int, rng: random.Random) -> dict[str, dict]:
    specs = {}
    for i in range(count):
        task = f"{prefix}{i:02d}"
        earlier = [f"{prefix}{j:02d}" for j in range(max(0, i - 8), i)]
        deps = sorted(rng.sample(earlier, k=min(len(earlier), rng.choice([0, 0, 1, 1, 2]))))
        modifies = [f"pkg/{task.lower()}.py"] + ([rng.choice(SHARED)] if rng.random() < 0.3 else [])
        specs[task] = {"depends_on": deps, "modifies": modifies, "verify": f"test -s pkg/{task.lower()}.py"}
    return specs


def writes(specs: dict[str, dict], rng: random.Random, low: float, high: float) -> dict[str, list]:
    return {t: [{"write": {f"pkg/{t.lower()}.py": f"VALUE = {t!r}\n"}, "sleep": round(rng.uniform(low, high), 2)}]
            for t in specs}


def controller_processes(marker: str) -> set:
    """Live processes whose command line holds ``marker`` (this test's unique vars file), and their children."""
    found = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{name}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        proc = proc_of(int(name)) if marker in cmdline else None
        if proc is not None:
            found.add(proc)
    return found | descendants(found)


def kill_controller(process: subprocess.Popen, marker: str) -> None:
    """SIGKILL the whole controller: ansible-playbook, its workers and their ssh clients, no cleanup.

    Ansible's workers call setsid, so a group kill misses them; they are found by their
    command line. One forked at the instant of the kill is an orphan the product must cope
    with (and does); the sweep stops it before the test goes on.
    """
    while True:
        targets = controller_processes(marker)
        if not targets:
            break
        signal_all(targets, signal.SIGKILL)
        time.sleep(0.05)
    process.communicate()


def signal_all(procs, sig: int) -> None:
    for proc in procs:
        try:
            os.kill(proc.pid, sig)
        except ProcessLookupError:  # a session that ended meanwhile
            pass


def test_controller_killed_at_ten_points_resumes_and_runs_every_agent_once(cluster, tmp_path):
    rng = random.Random(SEED)
    site = Site(cluster, tmp_path)
    specs = dag("K", 40, rng)
    site.project("killed", specs, writes(specs, rng, 3.0, 8.0))
    kills, runs, moments = 0, 0, []
    while True:
        process = site.start("killed")
        runs += 1
        if kills < 10:
            delay = rng.uniform(3.0, 10.0)
            try:
                process.communicate(timeout=delay)
            except subprocess.TimeoutExpired:
                kill_controller(process, str(site.vars))
                kills += 1
                moments.append((round(delay, 1), sum(site.ran("killed").values())))
                continue
        output = process.communicate(timeout=600)[0]
        if process.returncode == 0 or runs > 40:
            break
    print(f"fault seed {SEED}: {runs} runs, {kills} kills at (seconds, agents so far) {moments}")
    assert kills == 10, output[-3000:]
    assert process.returncode == 0, output[-4000:]
    assert site.states("killed") == {t: "merged" for t in specs}
    # Node-side evidence: exactly one agent per spec, and it is the attempt that succeeded.
    # (An attempt whose job the killed controller never launched is settled as missing and
    # the spec gets a new attempt: its number grows, but no agent ran for the old one.)
    ran = site.ran("killed")
    assert set(ran.values()) == {1}, [k for k, n in ran.items() if n > 1]
    assert sorted(Counter(task for task, _attempt, _run in ran).values()) == [1] * 40
    db = site.db()
    succeeded = {(r["task_id"], str(r["number"]), r["run_id"]) for r in db.execute(
        "SELECT task_id, number, run_id FROM attempts WHERE project = 'killed' AND outcome = 'succeeded'")}
    assert succeeded == set(ran)
    others = db.execute("SELECT DISTINCT outcome, kind FROM attempts WHERE outcome != 'succeeded'").fetchall()
    assert [tuple(r) for r in others] in ([], [("lost", "infra")])
    assert db.execute("SELECT SUM(attempts_used) FROM specs").fetchone()[0] == 0
    assert site.held() == {"slot_leases": 0, "path_locks": 0, "leftovers": 0}
    # The dead runs were noticed and their jobs adopted by the runs after them.
    lost = site.events("run_lost")
    assert 1 <= len(lost) <= kills and all("owner process is gone" in e["detail"]["why"] for e in lost)
    adopted = site.events("attempt_adopted")
    assert adopted and all(e["detail"]["adopted_from"] != e["run_id"] for e in adopted)


def test_a_node_cut_off_mid_run_and_back_is_quarantined_harvested_and_readmitted(cluster, tmp_path):
    rng = random.Random(SEED + 1)
    site = Site(cluster, tmp_path)
    specs = {f"C{i:02d}": {"modifies": [f"pkg/c{i:02d}.py"], "verify": f"test -s pkg/c{i:02d}.py"} for i in range(12)}
    site.project("cut", specs, writes(specs, rng, 4.0, 6.0))
    node = cluster.node("node-3")
    process = site.start("cut")
    try:
        site.wait_for_agent_on("node-3", process)
        assert node.stop() == set()  # listener and every session: the node is gone for the controller
        first = process.communicate(timeout=300)[0]
    finally:
        node.start()
        node.wait_ready(time.monotonic() + 30)
    assert process.returncode == 0, first[-4000:]
    assert site.states("cut") == {t: "merged" for t in specs}
    db = site.db()
    cut = {r["task_id"] for r in db.execute("SELECT task_id FROM attempts WHERE node = 'node-3' AND kind = 'infra'")}
    assert cut and site.events("node_quarantined")
    # (A start that failed on a healthy node is a leftover there too, adopted later in the run.)
    assert {e["task_id"] for e in site.events("leftover_recorded") if e["detail"]["node"] == "node-3"} == cut
    assert site.held()["leftovers"] == len(cut)  # their jobs may still run there: slots kept
    # Back: the next dispatch re-admits the node and settles what was left there.
    code, second = site.run("cut")
    assert code == 0, second[-3000:]
    readmitted = site.events("node_readmitted")
    assert [e["detail"]["node"] for e in readmitted] == ["node-3"] and readmitted[0]["detail"]["by"] == "preflight probe"
    settled = site.events("leftover_settled")
    assert {e["task_id"] for e in settled} == cut and all(e["detail"]["superseded"] for e in settled)
    assert site.held() == {"slot_leases": 0, "path_locks": 0, "leftovers": 0}
    # No agent ran twice in one attempt; the cut ones ran once more, in a new attempt elsewhere.
    ran = site.ran("cut")
    assert set(ran.values()) == {1}
    for task in cut:
        rows = db.execute("SELECT number, node, kind, outcome FROM attempts WHERE task_id = ? ORDER BY number",
                          (task,)).fetchall()
        assert rows[0]["node"] == "node-3" and rows[-1]["node"] != "node-3" and rows[-1]["outcome"] == "succeeded"
        # Anything between was the node's fault too (e.g. a start that found its mirror behind): no attempt charged.
        assert all(r["kind"] == "infra" for r in rows[:-1]), [dict(r) for r in rows]
    assert db.execute("SELECT SUM(attempts_used) FROM specs").fetchone()[0] == 0


def test_a_hung_node_is_quarantined_like_a_dead_one(cluster, tmp_path):
    rng = random.Random(SEED + 2)
    site = Site(cluster, tmp_path)
    specs = {f"H{i:02d}": {"modifies": [f"pkg/h{i:02d}.py"], "verify": f"test -s pkg/h{i:02d}.py"} for i in range(10)}
    site.project("hung", specs, writes(specs, rng, 4.0, 6.0))
    node = cluster.node("node-2")
    process = site.start("hung")
    stopped = []
    try:
        site.wait_for_agent_on("node-2", process)
        stopped = sorted(node.processes(), key=lambda p: p.pid)  # sshd listener and sessions: not the jobs
        signal_all(stopped, signal.SIGSTOP)
        output = process.communicate(timeout=300)[0]
    finally:
        signal_all(stopped, signal.SIGCONT)
    assert process.returncode == 0, output[-4000:]
    assert site.states("hung") == {t: "merged" for t in specs}
    quarantined = [e["detail"] for e in site.events("node_quarantined")]
    assert any(q["node"] == "node-2" for q in quarantined), quarantined
    assert set(site.ran("hung").values()) == {1}
    code, again = site.run("hung")
    assert code == 0, again[-3000:]
    assert "node-2" in [e["detail"]["node"] for e in site.events("node_readmitted")]
    assert site.held() == {"slot_leases": 0, "path_locks": 0, "leftovers": 0}


def test_gas_town_3584_a_stopped_heartbeat_is_read_and_the_wedged_run_killed_and_requeued(cluster, tmp_path):
    site = Site(cluster, tmp_path)
    site.project("wedge", {"W1": {"modifies": ["pkg/w1.py"], "verify": "test -s pkg/w1.py", "retries": 0},
                           "W2": {"modifies": ["pkg/w2.py"], "verify": "test -s pkg/w2.py", "depends_on": ["W1"]},
                           "W3": {"modifies": ["pkg/w3.py"], "verify": "test -s pkg/w3.py", "retries": 0}},
                 {"W1#1": [{"write": {"pkg/w1.py": "A = 1\n"}, "wedge_runner": True}],
                  "W1": [{"write": {"pkg/w1.py": "A = 2\n"}}], "W2": [{"write": {"pkg/w2.py": "B = 1\n"}}],
                  "W3#1": [{"write": {"pkg/w3.py": "C = 1\n"}, "wedge_runner": True}],
                  "W3": [{"stdout": "Done, nothing to change."}]})
    code, output = site.run("wedge")
    assert code == 2, output[-4000:]  # W3 stalled, then failed (empty diff): the report says so
    assert site.states("wedge") == {"W1": "merged", "W2": "merged", "W3": "failed"}
    db = site.db()
    first, second = db.execute("SELECT * FROM attempts WHERE task_id = 'W1' ORDER BY number").fetchall()
    assert first["kind"] == "infra" and "heartbeat stopped" in first["reason"]
    assert second["outcome"] == "succeeded"
    assert db.execute("SELECT attempts_used FROM specs WHERE task_id = 'W1'").fetchone()[0] == 0  # retries 0 and done
    # The node was not blamed for one wedged runner, and the wedged runner is gone.
    assert not [e for e in site.events("node_quarantined")]
    run_dir = next(Path(site.cluster.root).glob(f"nodes/*/work/runs/wedge/W1/1-{first['run_id']}"))
    assert (run_dir / "stalled").exists() and (run_dir / "exit_code").exists()
    pid = int((run_dir / "runner_pid").read_text())
    assert not Path(f"/proc/{pid}").exists() or " Z " in Path(f"/proc/{pid}/stat").read_text()
    assert site.held() == {"slot_leases": 0, "path_locks": 0, "leftovers": 0}
    # Cleanup keeps W3's stalled attempt (its work never came back and W3 is not merged) and
    # removes the rest: W1 is merged, so even its stalled first attempt may go; W3's second
    # attempt's patch is among the controller's artifacts.
    w3 = next(Path(site.cluster.root).glob("nodes/*/work/runs/wedge/W3/1-*"))
    cleaned = subprocess.run([str(VENV_BIN / "ansible-playbook"), "playbooks/cleanup.yml", "-e", "project=wedge",
                              "-e", "older_than=0"], cwd=REPO_ROOT, env=site.env, capture_output=True, text=True,
                             timeout=300)
    assert cleaned.returncode == 0, cleaned.stdout[-3000:]
    assert w3.exists() and "W3/1-" in cleaned.stdout and "never brought back" in cleaned.stdout
    assert not run_dir.exists()
    assert not list(Path(site.cluster.root).glob(f"nodes/*/work/runs/wedge/W1/2-{second['run_id']}"))
    assert not list(Path(site.cluster.root).glob("nodes/*/work/workspaces/wedge/W2/*"))


def test_collect_playbook_brings_back_what_a_killed_controller_left_finished_and_starts_nothing(cluster, tmp_path):
    rng = random.Random(SEED + 3)
    site = Site(cluster, tmp_path)
    specs = {f"L{i}": {"modifies": [f"pkg/l{i}.py"], "verify": f"test -s pkg/l{i}.py"} for i in range(4)}
    site.project("left", specs, writes(specs, rng, 3.0, 4.0))
    process = site.start("left")
    deadline = time.monotonic() + 120
    while len(site.ran("left")) < len(specs):
        assert time.monotonic() < deadline and process.poll() is None, "the agents did not all start"
        time.sleep(0.1)
    kill_controller(process, str(site.vars))
    finished = lambda: list(Path(site.cluster.root).glob("nodes/*/work/runs/left/*/*/exit_code"))  # noqa: E731
    while len(finished()) < len(specs):
        assert time.monotonic() < deadline, "the jobs did not finish on their nodes"
        time.sleep(0.2)

    def collect() -> str:
        run = subprocess.run([str(VENV_BIN / "ansible-playbook"), "playbooks/collect.yml", "-e", "project=left",
                              "-e", f"@{site.vars}"], cwd=REPO_ROOT, env=site.env, capture_output=True, text=True,
                             timeout=300)
        assert run.returncode == 0, run.stdout[-3000:]
        return run.stdout

    first = collect()
    assert site.states("left") == {t: "completed" for t in specs}, first[-3000:]
    assert len(site.events("leftover_collected")) == len(specs)
    assert site.held() == {"slot_leases": 0, "path_locks": 0, "leftovers": 0}
    repo = site.root / "repo-left"
    for task in specs:
        assert f"VALUE = {task!r}" in git(repo, "show", f"specfleet/left/{task}:pkg/{task.lower()}.py")
    # Idempotent, and nothing was started: one agent per spec, ever.
    again = collect()
    assert len(site.events("leftover_collected")) == len(specs) and not re.search(r"changed=[1-9]", again)
    assert set(site.ran("left").values()) == {1} and len(site.ran("left")) == len(specs)
    merged = subprocess.run([str(VENV_BIN / "ansible-playbook"), "playbooks/merge.yml", "-e", "project=left",
                             "-e", f"@{site.vars}"], cwd=REPO_ROOT, env=site.env, capture_output=True, text=True,
                            timeout=300)
    assert merged.returncode == 0, merged.stdout[-3000:]
    assert site.states("left") == {t: "merged" for t in specs}
