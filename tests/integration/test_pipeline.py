"""The per-spec pipeline end to end: real dispatch.yml runs on real sshd nodes, real git.

Only the model is fake: tests/fixtures/fake_agent.py, installed as ``claude`` and
``codex`` and driven by a scenario file, edits the workspace the way an agent would.
One project exercises every gate, the feedback loop, the rate-limit fallback, a hang
and a dependency in a single run; two more projects run at the same time to check that
the same task id in two projects never collides and that a branch which cannot be
brought back is never marked done.
"""
from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, git, make_repo, spec_text
from tests.integration.conftest import GROUP_VARS, VENV_BIN, controller_env
from tools.localcluster import LocalCluster, NodeSpec, free_port

FAKE = REPO_ROOT / "tests" / "fixtures" / "fake_agent.py"
CANARY = "sk-canary-7f3a9c1e5b2d4086"
CALC = "def add(a, b):\n    return a + b\n"
CALC_TEST = "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n"
REPO = {
    "calc.py": CALC, "tests/test_calc.py": CALC_TEST, "legacy.py": "# TODO: an old note that is not ours\n",
    "feature/__init__.py": "", "other/__init__.py": "",
}
GOOD = "def double(x):\n    return 2 * x\n"
GOOD_TEST = "from feature.double import double\n\n\ndef test_double():\n    assert double(4) == 8\n"


def spec(task: str, modifies: list[str], verify: str = "python3 -m pytest -q", **fields) -> str:
    return spec_text(task, modifies=modifies, verify=verify, estimate="1m", timeout="3m", **fields)


# task -> (spec fields, scenario calls). Every spec not meant to retry has retries 0.
SCENARIOS: dict[str, tuple[dict, object]] = {
    "g-ok": ({"modifies": ["feature/double.py", "tests/test_double.py"]},
             [{"write": {"feature/double.py": GOOD, "tests/test_double.py": GOOD_TEST},
               "print_env": ["ANTHROPIC_API_KEY"], "require_env": {"ANTHROPIC_API_KEY": CANARY}}]),
    "g-empty": ({"modifies": ["feature/"], "retries": 0}, [{"stdout": "I looked around. Done!"}]),
    "g-todo": ({"modifies": ["feature/"], "retries": 0},
               [{"write": {"feature/half.py": "def half(x):\n    # TODO: handle odd numbers\n    return x // 2\n"}}]),
    "g-scope": ({"modifies": ["feature/"], "retries": 0},
                [{"write": {"feature/triple.py": "def triple(x):\n    return 3 * x\n",
                            "other/sneaky.py": "VALUE = 1\n"}}]),
    "g-deltest": ({"modifies": ["feature/", "tests/"], "retries": 0},
                  [{"write": {"feature/neg.py": "def neg(x):\n    return -x\n"}, "delete": ["tests/test_calc.py"]}]),
    "g-skip": ({"modifies": ["feature/", "tests/"], "retries": 0},
               [{"write": {"feature/sq.py": "def sq(x):\n    return x * x\n",
                           "tests/test_calc.py": "import pytest\nfrom calc import add\n\n\n@pytest.mark.skip(reason='flaky')\n"
                                                 "def test_add():\n    assert add(2, 3) == 5\n"}}]),
    "g-norun": ({"modifies": ["feature/"], "retries": 0, "verify": "python3 -c 'import calc'"},
                [{"write": {"feature/inc.py": "def inc(x):\n    return x + 1\n"}}]),
    "f-loop": ({"modifies": ["calc.py"], "retries": 2},
               [{"write": {"calc.py": "def add(a, b):\n    return a - b\n"}},
                {"write": {"calc.py": "def add(a, b):\n    return b + a\n"}}]),
    "r-limit": ({"modifies": ["feature/mul.py"]},
                {"claude": [{"stderr": "API Error: 429 {\"type\":\"rate_limit_error\",\"message\":\"Too many requests\"}",
                             "exit": 1}],
                 "codex": [{"write": {"feature/mul.py": "def mul(a, b):\n    return a * b\n"}}]}),
    "h-hang": ({"modifies": ["feature/"], "retries": 0, "executor": "slow"}, [{"hang": True}]),
    "g-after": ({"modifies": ["feature/after.py"], "depends_on": ["g-todo"]},
                [{"write": {"feature/after.py": "AFTER = 1\n"}}]),
    "d-base": ({"modifies": ["feature/base.py"]}, [{"write": {"feature/base.py": "BASE = 'from d-base'\n"}}]),
    "d-dep": ({"modifies": ["feature/dep.py"], "depends_on": ["d-base"],
               "verify": "grep -q 'from d-base' feature/base.py && python3 -m pytest -q"},
              [{"write": {"feature/dep.py": "from feature.base import BASE\n\nDEP = BASE\n"}}]),
}
EXPECTED_FAILURES = {
    "g-empty": "gate diff", "g-todo": "gate stubs", "g-scope": "other/sneaky.py is outside modifies",
    "g-deltest": "tests/test_calc.py deleted", "g-skip": "test skipped or disabled", "g-norun": "gate tests_ran",
    "h-hang": "timed out",
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline-cluster")
    nodes = [NodeSpec(f"node-{i}", f"127.0.0.{50 + i}", free_port(f"127.0.0.{50 + i}"), 4) for i in (1, 2)]
    with LocalCluster(root / "c", nodes) as started:
        started.start()
        yield started


class Site:
    """A controller home, a specs root, fake CLIs and their executor definitions."""

    def __init__(self, cluster: LocalCluster, root: Path):
        self.cluster, self.root = cluster, root
        self.home = root / "home"
        self.specs = root / "specs"
        self.bin = root / "bin"
        self.bin.mkdir(parents=True)
        for name in ("claude", "codex"):
            (self.bin / name).symlink_to(FAKE)
        self.scenario = root / "scenario.json"
        self.scenario.write_text("{}")
        fake_env = {"FAKE_AGENT_SCENARIO": str(self.scenario)}
        claude = [str(self.bin / "claude"), "--print", "--output-format", "json", "--dangerously-skip-permissions"]
        self.vars = root / "vars.json"
        self.vars.write_text(json.dumps({
            "specfleet_specs_root": str(self.specs), "specfleet_default_executor": "claude",
            "vault_test_key": CANARY, "specfleet_node_grace": 60,
            "specfleet_executors": {
                "claude": {"command": claude, "prompt": "stdin", "env": fake_env, "fallback": "codex", "backoff": 1,
                           "env_from_vars": {"ANTHROPIC_API_KEY": "vault_test_key"}},
                "codex": {"command": [str(self.bin / "codex"), "exec", "--full-auto", "-"], "prompt": "stdin",
                          "env": fake_env},
                "slow": {"command": claude, "env": fake_env, "timeout": 4},
            }}))
        inventory = cluster.write_inventory(root / "inventory" / "hosts.yml", group_vars_dir=GROUP_VARS)
        self.env = controller_env(self.home, cluster.ansible_env(inventory))
        self.repos: dict[str, Path] = {}

    def project(self, name: str, specs: dict[str, dict], calls: dict[str, object]) -> Path:
        repo = make_repo(self.root / f"repo-{name}", REPO)
        folder = self.specs / name
        folder.mkdir(parents=True)
        (folder / "project.yml").write_text(f"repository: {repo}\nverify: python3 -m pytest -q\n")
        for task, fields in specs.items():
            fields = dict(fields)
            (folder / f"{task}.md").write_text(spec(task, fields.pop("modifies"), **fields))
        scenario = json.loads(self.scenario.read_text())
        scenario.update(calls)
        self.scenario.write_text(json.dumps(scenario))
        self.repos[name] = repo
        return repo

    def start(self, project: str) -> subprocess.Popen:
        return subprocess.Popen([str(VENV_BIN / "ansible-playbook"), "-v", "dispatch.yml", "-e", f"project={project}",
                                 "-e", f"@{self.vars}"], cwd=REPO_ROOT, env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)

    def db(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.home / "state.db")
        db.row_factory = sqlite3.Row
        return db

    def specs_of(self, project: str) -> dict[str, sqlite3.Row]:
        return {r["task_id"]: r for r in self.db().execute("SELECT * FROM specs WHERE project = ?", (project,))}

    def attempts(self, project: str, task: str) -> list[sqlite3.Row]:
        return list(self.db().execute("SELECT * FROM attempts WHERE project = ? AND task_id = ? ORDER BY number",
                                      (project, task)))

    def status(self, project: str, task: str) -> dict:
        row = self.attempts(project, task)[-1]
        return json.loads((Path(row["artifacts"]) / "status.json").read_text())


@pytest.fixture(scope="module")
def runs(cluster, tmp_path_factory):
    """Three projects dispatched at the same time; -> (site, {project: ansible output})."""
    site = Site(cluster, tmp_path_factory.mktemp("pipeline"))
    site.project("gates", {t: f for t, (f, _c) in SCENARIOS.items()}, {t: c for t, (_f, c) in SCENARIOS.items()})
    # Same task id as in "gates", another repository and another result.
    site.project("twin", {"g-ok": {"modifies": ["feature/"]}}, {})
    # The controller's repository cannot take the branch: a ref specfleet/unbroughtback blocks the
    # directory specfleet/unbroughtback/ that specfleet/unbroughtback/<task> needs.
    blocked = site.project("unbroughtback", {"u-one": {"modifies": ["feature/base.py"], "retries": 0}},
                           {"u-one": [{"write": {"feature/base.py": "BASE = 1\n"}}]})
    git(blocked, "branch", "specfleet/unbroughtback")
    # Nodes fetch from and push to the repository themselves (transport: remote).
    remote = site.project("remote", {"m-one": {"modifies": ["feature/m.py"]}},
                          {"m-one": [{"write": {"feature/m.py": "M = 1\n"}}]})
    bare = site.root / "remote.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(remote), str(bare)], check=True)
    (site.specs / "remote" / "project.yml").write_text(f"repository: {bare}\ntransport: remote\n"
                                                       "verify: python3 -m pytest -q\n")
    site.repos["remote"] = bare
    # The fake agent looks up "<project>:<task>" before "<task>".
    scenario = json.loads(site.scenario.read_text())
    scenario["twin:g-ok"] = [{"write": {"feature/twin.py": "TWIN = True\n"}}]
    site.scenario.write_text(json.dumps(scenario))
    processes = {name: site.start(name) for name in ("gates", "twin", "unbroughtback", "remote")}
    outputs = {name: p.communicate(timeout=900)[0] for name, p in processes.items()}
    return site, outputs


def test_each_gate_fails_closed_and_names_the_problem(runs):
    site, outputs = runs
    rows = site.specs_of("gates")
    for task, expected in EXPECTED_FAILURES.items():
        assert rows[task]["state"] == "failed", (task, rows[task]["reason"], outputs["gates"][-3000:])
        assert expected in rows[task]["reason"], (task, rows[task]["reason"])
        assert site.attempts("gates", task)[-1]["commit_sha"] is None
    # The failed attempts' work is kept as a patch among the artifacts.
    scope = site.status("gates", "g-scope")
    assert scope["state"] == "failed" and scope["final"]
    patch = (Path(site.attempts("gates", "g-scope")[-1]["artifacts"]) / "changes.patch").read_text()
    assert "other/sneaky.py" in patch
    # A failure becomes a lesson for later prompts of the project.
    lessons = [r["text"] for r in site.db().execute("SELECT text FROM lessons WHERE project = 'gates'")]
    assert any("outside modifies" in text for text in lessons)


def test_bernstein_3254_a_failed_gate_never_lets_a_branch_through(runs):
    site, _outputs = runs
    repo = site.repos["gates"]
    branches = git(repo, "branch", "--list", "specfleet/gates/*", "--format=%(refname:short)").split()
    for task in EXPECTED_FAILURES:
        assert f"specfleet/gates/{task}" not in branches, task
    # Its dependent never ran: blocked, naming the failed spec, and no agent call was made.
    row = site.specs_of("gates")["g-after"]
    assert row["state"] == "blocked" and "g-todo" in row["reason"]
    assert site.attempts("gates", "g-after") == []


def test_a_passing_spec_lands_on_its_branch_with_every_gate_passed(runs):
    site, outputs = runs
    assert site.specs_of("gates")["g-ok"]["state"] == "merged", outputs["gates"][-3000:]
    repo = site.repos["gates"]
    branch = "specfleet/gates/g-ok"
    files = git(repo, "ls-tree", "-r", "--name-only", branch).split()
    assert "feature/double.py" in files and "tests/test_double.py" in files
    status = site.status("gates", "g-ok")
    attempt = site.attempts("gates", "g-ok")[-1]
    assert git(repo, "rev-parse", branch).strip() == status["commit"] == attempt["commit_sha"]
    assert "g-ok" in git(repo, "log", "-1", "--format=%B", branch)
    assert status["rounds"][-1]["gates"] == {"diff": True, "stubs": True, "scope": True, "tests_kept": True,
                                             "tests_ran": True, "secrets": True}
    assert attempt["executor"] == "claude" and attempt["rounds"] == 1
    # legacy.py's old TODO is in an untouched line: it did not fail the stubs gate.


def test_feedback_loop_fixes_a_failing_verify_on_round_two(runs):
    site, _outputs = runs
    assert site.specs_of("gates")["f-loop"]["state"] == "merged"
    status = site.status("gates", "f-loop")
    assert [r["ok"] for r in status["rounds"]] == [False, True]
    assert status["rounds"][0]["verify_exit"] != 0
    folder = Path(site.attempts("gates", "f-loop")[-1]["artifacts"])
    second = (folder / "round-2.prompt.md").read_text()
    assert "Feedback from round 1" in second and "assert" in second
    assert "return b + a" in git(site.repos["gates"], "show", "specfleet/gates/f-loop:calc.py")


def test_rate_limit_moves_to_the_fallback_and_the_status_says_which_ran(runs):
    site, _outputs = runs
    assert site.specs_of("gates")["r-limit"]["state"] == "merged"
    status = site.status("gates", "r-limit")
    tries = status["rounds"][0]["tries"]
    assert [(t["executor"], t["rate_limited"]) for t in tries] == [("claude", True), ("codex", False)]
    assert status["executor"] == "codex" and site.attempts("gates", "r-limit")[-1]["executor"] == "codex"


def test_a_hung_agent_is_killed_with_its_process_group_and_the_status_is_final(runs):
    site, _outputs = runs
    status = site.status("gates", "h-hang")
    assert status["final"] and status["state"] == "failed"
    assert status["rounds"][0]["timed_out"] is True
    workspace = Path(status["workspace"])
    agent_pid, child_pid = map(int, (workspace / ".git" / "fake-agent-hung").read_text().split())
    for pid in (agent_pid, child_pid):
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[1][:3]


def test_a_dependent_spec_starts_from_its_dependencys_work(runs):
    site, _outputs = runs
    rows = site.specs_of("gates")
    assert rows["d-base"]["state"] == rows["d-dep"]["state"] == "merged"
    # d-dep started after d-base was merged, from the integration tip that holds it.
    repo = site.repos["gates"]
    base_commit = site.attempts("gates", "d-base")[-1]["commit_sha"]
    assert subprocess.run(["git", "-C", str(repo), "merge-base", "--is-ancestor", base_commit,
                           "specfleet/gates/d-dep"]).returncode == 0
    assert "from d-base" in git(repo, "show", "specfleet/gates/d-dep:feature/base.py")
    merged = {e["task_id"]: e["ts"] for e in map(dict, site.db().execute(
        "SELECT task_id, ts FROM events WHERE project = 'gates' AND to_state = 'merged'"))}
    first_attempt = site.attempts("gates", "d-dep")[0]["started_at"]
    assert merged["d-base"] <= first_attempt


def test_the_same_task_id_in_two_projects_never_collides(runs):
    site, outputs = runs
    assert site.specs_of("twin")["g-ok"]["state"] == "merged", outputs["twin"][-3000:]
    twin = git(site.repos["twin"], "ls-tree", "-r", "--name-only", "specfleet/twin/g-ok").split()
    gates = git(site.repos["gates"], "ls-tree", "-r", "--name-only", "specfleet/gates/g-ok").split()
    assert "feature/twin.py" in twin and "feature/double.py" not in twin
    assert "feature/double.py" in gates and "feature/twin.py" not in gates
    assert site.status("twin", "g-ok")["workspace"] != site.status("gates", "g-ok")["workspace"]


def test_a_branch_that_cannot_be_brought_back_is_not_done(runs):
    site, outputs = runs
    row = site.specs_of("unbroughtback")["u-one"]
    assert row["state"] == "failed", outputs["unbroughtback"][-3000:]
    assert "could not be brought back" in row["reason"]
    folder = Path(site.attempts("unbroughtback", "u-one")[-1]["artifacts"])
    # The work is not lost: the bundle is kept among the artifacts.
    heads = git(site.repos["unbroughtback"], "bundle", "list-heads", str(folder / "result.bundle"))
    assert "refs/heads/specfleet/unbroughtback/u-one" in heads


def test_remote_transport_fetches_and_pushes_from_the_nodes(runs):
    site, outputs = runs
    assert site.specs_of("remote")["m-one"]["state"] == "merged", outputs["remote"][-3000:]
    status = site.status("remote", "m-one")
    assert status.get("pushed") is True and "bundle" not in status
    assert git(site.repos["remote"], "rev-parse", "specfleet/remote/m-one").strip() == status["commit"]
    assert "M = 1" in git(site.repos["remote"], "show", "specfleet/remote/m-one:feature/m.py")
    # The merge queue worked in a mirror of the URL and pushed the integration branch there.
    assert "M = 1" in git(site.repos["remote"], "show", "specfleet/remote/integration:feature/m.py")


def test_the_api_key_never_reaches_logs_status_store_or_artifacts(runs):
    site, outputs = runs
    # The fake agent printed the key it was given (and checked it was the right one).
    assert site.specs_of("gates")["g-ok"]["state"] == "merged"
    agent_log = next(Path(site.attempts("gates", "g-ok")[-1]["artifacts"]).glob("round-1.agent.*.log")).read_text()
    assert "ANTHROPIC_API_KEY=***" in agent_log
    for name, output in outputs.items():
        assert CANARY not in output, name
    for place in (site.home, site.cluster.root / "nodes"):
        found = subprocess.run(["grep", "-rl", "--binary-files=text", CANARY, str(place)], capture_output=True, text=True)
        assert found.stdout == "", found.stdout


def test_killing_the_ssh_connection_mid_run_loses_nothing(cluster, tmp_path):
    site = Site(cluster, tmp_path)
    site.project("dropped", {"s-slow": {"modifies": ["feature/slow.py"]}},
                 {"s-slow": [{"sleep": 6, "write": {"feature/slow.py": "SLOW = 1\n"}}]})
    process = site.start("dropped")
    deadline = time.monotonic() + 120
    runs_root = None
    while time.monotonic() < deadline and runs_root is None:
        found = list(cluster.root.glob("nodes/*/work/runs/dropped/s-slow/*/round-1.prompt.md"))
        runs_root = found[0].parent if found else None
        assert process.poll() is None, process.stdout.read()
        time.sleep(0.2)
    assert runs_root is not None, "the agent never started"
    # Cut every SSH connection of this controller (the masters and the waiting sessions).
    cp_dir = site.env["ANSIBLE_SSH_CONTROL_PATH_DIR"]
    killed = 0
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if cmdline.startswith(("ssh ", "ssh: ")) and cp_dir in cmdline:
                os.kill(int(proc.name), signal.SIGKILL)
                killed += 1
    assert killed > 0, [p.read_bytes() for p in Path("/proc").glob("[0-9]*/cmdline") if b"ssh" in p.read_bytes()[:40]]
    output = process.communicate(timeout=300)[0]
    assert process.returncode == 0, output[-3000:]
    status = site.status("dropped", "s-slow")
    assert status["state"] == "succeeded" and len(status["rounds"]) == 1
    # The agent ran once: the job was not started twice.
    assert (Path(status["workspace"]) / ".git" / "fake-agent-calls").read_text() == "1"
    assert "SLOW = 1" in git(site.repos["dropped"], "show", "specfleet/dropped/s-slow:feature/slow.py")


def test_verify_and_merge_tests_run_on_the_node_named_by_specfleet_verify_on(cluster, tmp_path):
    site = Site(cluster, tmp_path)
    site.project("onnode", {"v-one": {"modifies": ["feature/v.py"]}},
                 {"v-one": [{"write": {"feature/v.py": "V = 1\n"}}]})
    (site.specs / "onnode" / "project.yml").write_text(
        f"repository: {site.repos['onnode']}\nverify: python3 -m pytest -q\n"
        "test_command: 'echo \"tests-ran-in=$HOME\" && python3 -m pytest -q'\n")
    run = subprocess.run([str(VENV_BIN / "ansible-playbook"), "dispatch.yml", "-e", "project=onnode",
                          "-e", f"@{site.vars}", "-e", "specfleet_verify_on=node-2"], cwd=REPO_ROOT, env=site.env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:]
    assert site.specs_of("onnode")["v-one"]["state"] == "merged"
    check = site.db().execute("SELECT detail_json FROM checks WHERE kind = 'verify'").fetchone()
    tests = next(c for c in json.loads(check["detail_json"])["checks"] if c["check"] == "tests")
    # On the node, as in the controller's sandbox, the tests get a throw-away HOME (not the
    # node login's, which holds its credentials), removed afterwards.
    assert tests["detail"].endswith("passed on node-2")
    home = re.search(r"tests-ran-in=(\S*/specfleet-verify\.\w+\.home)\n", tests["output"])
    assert home and not Path(home.group(1)).exists(), tests["output"]
    # The node's mirror received the commit it tested; nothing is left in its temp space.
    mirror = cluster.root / "nodes" / "node-2" / "work" / "mirrors" / "onnode.git"
    commit = site.attempts("onnode", "v-one")[-1]["commit_sha"]
    assert subprocess.run(["git", "--git-dir", str(mirror), "cat-file", "-e", commit]).returncode == 0
    # A name that is not a node is refused with the reason.
    bad = subprocess.run([str(VENV_BIN / "ansible-playbook"), "playbooks/merge.yml", "-e", "project=onnode",
                          "-e", f"@{site.vars}", "-e", "specfleet_verify_on=node-9"], cwd=REPO_ROOT, env=site.env,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "node-9" in bad.stdout
