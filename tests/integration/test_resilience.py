"""Fault injection on real sshd nodes: nothing lost, nothing run twice.

Every scenario runs the real dispatch.yml with the real agent runner; only the model is
fake (tests/fixtures/fake_agent.py). The fake agent appends one line per invocation to a
ledger file *on the node*, which is the evidence of how many agents really ran.

* the controller (ansible-playbook and its workers) is SIGKILLed at 10 points of a
  60-spec run, each placed by an event of the pipeline (agents started, a dead run's job
  adopted, a spec collected, verified, merged) while it has a job running on a node, and
  dispatch is run again each time;
* a node's sshd and sessions are killed mid-run and it comes back later;
* a node's sshd processes are stopped (SIGSTOP): a hung node;
* a runner is wedged (SIGSTOP) so its heartbeat stops while its processes live;
* cleanup after all that keeps whatever was never brought back.
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import threading
import time
from collections import Counter
from functools import partial
from pathlib import Path
from typing import IO

import pytest
import yaml

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

    def __init__(self, cluster: LocalCluster, root: Path, slots: int | None = None, **overrides):
        self.cluster, self.root = cluster, root
        self.home, self.specs, self.ledger = root / "home", root / "specs", root / "ledger.jsonl"
        (root / "bin").mkdir(parents=True)
        (root / "bin" / "claude").symlink_to(FAKE)
        self.scenario = root / "scenario.json"
        self.scenario.write_text("{}")
        # The agents run as the unprivileged agent user: the ledger is theirs to append to.
        self.ledger.touch()
        self.ledger.chmod(0o666)
        env = {"FAKE_AGENT_SCENARIO": str(self.scenario), "FAKE_AGENT_LEDGER": str(self.ledger)}
        self.vars = root / "vars.json"
        self.vars.write_text(json.dumps({
            "specfleet_specs_root": str(self.specs), "specfleet_default_executor": "claude",
            "specfleet_node_grace": 3, "specfleet_step_timeout": 60, "specfleet_heartbeat_interval": 1,
            "specfleet_stall_timeout": 6,
            "specfleet_executors": {"claude": {"command": [str(root / "bin" / "claude"), "--print"], "env": env}},
            **overrides}))
        inventory = cluster.write_inventory(root / "inventory" / "hosts.yml", group_vars_dir=GROUP_VARS)
        if slots is not None:  # this site's nodes offer fewer slots than the cluster's sshd allows
            data = yaml.safe_load(inventory.read_text())
            for host in data["all"]["children"]["specfleet_nodes"]["hosts"].values():
                host["specfleet_slots"] = slots
            inventory.write_text(yaml.safe_dump(data, sort_keys=False))
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

    def start(self, project: str, *extra: str, log: IO | None = None) -> subprocess.Popen:
        # A session of its own, so the whole controller (main process and workers) can be killed.
        # With ``log`` the output goes there: a controller nobody reads from must not block on a full pipe.
        return subprocess.Popen([str(VENV_BIN / "ansible-playbook"), "dispatch.yml", "-e", f"project={project}",
                                 "-e", f"@{self.vars}", *extra], cwd=REPO_ROOT, env=self.env,
                                stdout=log or subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)

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

    @contextlib.contextmanager
    def wedging(self):
        """SIGSTOP each runner whose agent asks for it in the ledger (``wedge_runner``).

        The agent runs as the agent user and cannot signal its runner (root's); this test
        process can. The agent waits until its runner is stopped, so the wedge is placed by
        that event, not by a guess about time.
        """
        done, stopped = threading.Event(), set()

        def watch() -> None:
            while not done.is_set():
                for record in self.ledger_lines():
                    pid = record.get("wedge")
                    if pid and pid not in stopped:
                        stopped.add(pid)
                        os.kill(pid, signal.SIGSTOP)
                done.wait(0.05)

        thread = threading.Thread(target=watch, daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()

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


# Where the ten kills land, in this order: the first moment the live controller has done
# this so many times in its own run, has adopted at least one of the jobs the controller
# killed before it left running, and has a job running on a node. Read from outside the
# controller: agents from the node-side ledger, the rest from its events in the state store.
# Varied so that the kills hit every stage: starting agents, re-attaching to a dead run's
# jobs, collecting, verifying and merging.
KILL_POINTS = [("agent started", 1), ("attempt adopted", 1), ("spec collected", 1), ("agent started", 2),
               ("spec verified", 1), ("merge batch started", 1), ("agent started", 3), ("spec merged", 1),
               ("spec collected", 2), ("agent started", 1)]
RUN_EVENTS = {"attempt adopted": ("attempt_adopted", None), "spec collected": ("state", "completed"),
              "spec verified": ("state", "verified"), "merge batch started": ("batch_started", None),
              "spec merged": ("state", "merged")}


class Controller:
    """One dispatch controller of ``project``, watched from outside: state store, ledger, run directories."""

    def __init__(self, site: Site, project: str, log: Path, earlier_runs: list[str]):
        self.site, self.project, self.log = site, project, log
        with log.open("w") as out:
            self.process = site.start(project, log=out)
        self.started = time.monotonic()
        self.earlier = set(earlier_runs)
        self.run_id: str | None = None

    def query(self, sql: str, *args) -> list[sqlite3.Row]:
        db = sqlite3.connect(self.site.home / "state.db", timeout=30)
        try:
            db.row_factory = sqlite3.Row
            return db.execute(sql, args).fetchall()
        finally:
            db.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, what: str, condition, timeout: float = 600):
        """Poll ``condition`` until it returns something true; fail if the controller ends first."""
        deadline = time.monotonic() + timeout
        while not (found := condition()):
            if self.process.poll() is not None:
                pytest.fail(f"controller ended (rc {self.process.returncode}) before {what}:\n{self.output()[-3000:]}")
            assert time.monotonic() < deadline, f"no {what} in {timeout} s"
            time.sleep(0.05)
        return found

    def own_run(self) -> str | None:
        """The run this controller opened (owned by the ansible-playbook process), once it has."""
        if not (self.site.home / "state.db").exists():  # the first controller has not created it yet
            return None
        try:
            rows = self.query("SELECT id FROM runs WHERE project = ? AND kind = 'dispatch' AND owner_pid = ?",
                              self.project, self.process.pid)
        except sqlite3.OperationalError:  # no tables yet
            return None
        self.run_id = next((r["id"] for r in rows if r["id"] not in self.earlier), None)
        return self.run_id

    def done(self, point: str) -> int:
        """How many times this run has reached ``point`` (see KILL_POINTS)."""
        if point == "agent started":  # by its own attempts: an agent of an adopted one started earlier
            text = self.site.ledger.read_text() if self.site.ledger.exists() else ""
            complete = text.split("\n")[:-1]  # a line being appended right now is left for the next look
            return sum(1 for line in complete if (r := json.loads(line))["project"] == self.project
                       and r["run"] == self.run_id)
        kind, to_state = RUN_EVENTS[point]
        return len(self.query("SELECT 1 FROM events WHERE run_id = ? AND kind = ? AND to_state IS ?",
                              self.run_id, kind, to_state))

    def adopted(self, attempts: list[dict]) -> list[dict]:
        """Those of ``attempts`` (jobs a killed run left running) this run has adopted so far."""
        rows = {tuple(r) for r in self.query("SELECT task_id, json_extract(detail_json, '$.attempt'),"
                                             " json_extract(detail_json, '$.adopted_from') FROM events"
                                             " WHERE kind = 'attempt_adopted' AND run_id = ?", self.run_id)}
        return [a for a in attempts if (a["task_id"], a["number"], a["job_run"]) in rows]

    def leased(self) -> list[dict]:
        """Open attempts this run holds a slot for (``job_run``: the run id of its directories on the node)."""
        return [dict(r) for r in self.query(
            "SELECT a.id, a.task_id, a.number, a.run_id AS job_run, a.node FROM slot_leases l JOIN attempts a"
            " ON a.id = l.attempt_id WHERE l.run_id = ? AND a.ended_at IS NULL ORDER BY a.id", self.run_id)]

    def in_flight(self) -> list[dict]:
        """Leased attempts whose job is running on its node: wrapper alive, no exit code yet."""
        running = []
        for attempt in self.leased():
            run_dir = (self.site.cluster.node(attempt["node"]).work_dir / "runs" / self.project / attempt["task_id"]
                       / f"{attempt['number']}-{attempt['job_run']}")
            try:
                wrapper = int((run_dir / "wrapper_pid").read_text())
            except (OSError, ValueError):  # not started yet
                continue
            if proc_of(wrapper) is not None and not (run_dir / "exit_code").exists():
                running.append(attempt)
        return running

    def kill_point(self, point: str, times: int, inherited: list[dict]) -> list[dict]:
        """The jobs running now if this run is at the kill point (see KILL_POINTS), else nothing."""
        if self.done(point) < times or (inherited and not self.adopted(inherited)):
            return []
        return self.in_flight()

    def run_is_open(self) -> bool:
        return bool(self.query("SELECT 1 FROM runs WHERE id = ? AND ended_at IS NULL", self.run_id))


def test_controller_killed_at_ten_points_resumes_and_runs_every_agent_once(cluster, tmp_path):
    rng = random.Random(SEED)
    # Jobs run on while the controllers restart, and each kill waits for its run to land
    # work: two slots a node (waves of 6 starts, not 12) and 60 specs leave work to be in
    # flight at the tenth kill (27 to 44 agents had started by then; 40 specs were not always enough).
    site = Site(cluster, tmp_path, slots=2)
    specs = dag("K", 60, rng)
    site.project("killed", specs, writes(specs, rng, 3.0, 8.0))
    runs: list[str] = []
    kills: list[dict] = []
    for point, times in KILL_POINTS:
        controller = Controller(site, "killed", tmp_path / f"controller-{len(runs) + 1}.log", runs)
        runs.append(controller.wait_for("a run of its own", controller.own_run))
        inherited = kills[-1]["flight"] if kills else []
        flight = controller.wait_for(f"{point} x{times}, a job of the last killed run adopted and a job running",
                                     partial(controller.kill_point, point, times, inherited))
        testing = controller.query("SELECT b.id FROM batches b JOIN events e ON e.kind = 'batch_started' AND"
                                   " e.run_id = ? AND json_extract(e.detail_json, '$.batch') = b.id"
                                   " WHERE b.status = 'testing'", controller.run_id)
        kill_controller(controller.process, str(site.vars))
        # It was live when killed: its run was never ended, and the jobs seen running just
        # before are still leased to it (nothing of theirs was collected meanwhile).
        assert controller.run_is_open(), controller.output()[-3000:]
        leased = {a["id"] for a in controller.leased()}
        flight = [a for a in flight if a["id"] in leased]
        assert flight, (point, times, controller.output()[-3000:])
        kills.append({"point": f"{point} x{times}", "run": controller.run_id, "flight": flight,
                      "after_s": round(time.monotonic() - controller.started, 1),
                      "agents": sum(site.ran("killed").values()), "batch_testing": bool(testing)})
    for _completion in range(3):  # as before: dispatch again until a run ends with everything merged
        controller = Controller(site, "killed", tmp_path / f"controller-{len(runs) + 1}.log", runs)
        code = controller.process.wait(timeout=600)
        runs.append(controller.own_run())
        if code == 0:
            break
    assert code == 0, controller.output()[-4000:]
    assert site.states("killed") == {t: "merged" for t in specs}
    # Node-side evidence: exactly one agent per spec, and it is the attempt that succeeded.
    # (An attempt whose job the killed controller never launched is settled as missing and
    # the spec gets a new attempt: its number grows, but no agent ran for the old one.)
    ran = site.ran("killed")
    assert set(ran.values()) == {1}, [k for k, n in ran.items() if n > 1]
    assert sorted(Counter(task for task, _attempt, _run in ran).values()) == [1] * len(specs)
    db = site.db()
    succeeded = {(r["task_id"], str(r["number"]), r["run_id"]) for r in db.execute(
        "SELECT task_id, number, run_id FROM attempts WHERE project = 'killed' AND outcome = 'succeeded'")}
    assert succeeded == set(ran)
    others = db.execute("SELECT DISTINCT outcome, kind FROM attempts WHERE outcome != 'succeeded'").fetchall()
    assert [tuple(r) for r in others] in ([], [("lost", "infra")])
    assert db.execute("SELECT SUM(attempts_used) FROM specs").fetchone()[0] == 0
    assert site.held() == {"slot_leases": 0, "path_locks": 0, "leftovers": 0}
    # Every killed run was noticed as dead, and the jobs it had running were adopted, not
    # started again, and succeeded: some by the next run (for a killed one a condition of its
    # kill), the rest by a later one (the next run may be killed before it adopts them all:
    # one whose job has finished waits for a free slot on its node behind new starts).
    lost = site.events("run_lost")
    assert sorted(e["run_id"] for e in lost) == sorted(k["run"] for k in kills)
    assert all("owner process is gone" in e["detail"]["why"] for e in lost)
    adoptions = Counter()
    for e in site.events("attempt_adopted"):
        assert e["detail"]["adopted_from"] != e["run_id"]
        adoptions[(e["task_id"], e["detail"]["attempt"], e["detail"]["adopted_from"], e["run_id"])] += 1
    for index, kill in enumerate(kills):
        later, kill["adopted_next"] = runs[index + 1:], 0
        for attempt in kill["flight"]:
            by = {run for (task, number, job_run, run) in adoptions  # (the killed run may have adopted it too)
                  if (task, number, job_run) == (attempt["task_id"], attempt["number"], attempt["job_run"])}
            assert by & set(later), (kill["point"], attempt, by)
            row = db.execute("SELECT outcome, adopted_by FROM attempts WHERE id = ?", (attempt["id"],)).fetchone()
            assert row["outcome"] == "succeeded" and row["adopted_by"] in later, (kill["point"], attempt, dict(row))
            kill["adopted_next"] += runs[index + 1] in by
        assert kill["adopted_next"] >= 1, kill
    print(f"fault seed {SEED}: {len(runs)} runs; kills (point: seconds into the run, agents so far, jobs running,"
          " how many of them the next run adopted, a merge batch testing):")
    for kill in kills:
        print(f"  {kill['point']}: {kill['after_s']} s, {kill['agents']} agents, {len(kill['flight'])} running,"
              f" {kill['adopted_next']} adopted next, batch testing {kill['batch_testing']}")


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
    with site.wedging():
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
