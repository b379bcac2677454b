"""Verify, merge queue and review against real git repositories and a real store."""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from specfleet.attempt.workspace import integration_branch, spec_branch
from specfleet.land import llmreview
from specfleet.land.queue import MergeQueue, merge_queue, queue_lock
from specfleet.land.reject import reject
from specfleet.land.repository import LandingError, tip
from specfleet.land.review import pending_review, promote
from specfleet.land.verify import verify
from specfleet.land.where import LandingPlace, OnController, landing_place
from specfleet.model.project import load_project
from specfleet.model.states import SpecState
from specfleet.store.base import now
from specfleet.store.core import Store
from specfleet.validate.checks import validate_project
from tests.chat_server import completion
from tests.conftest import REPO_ROOT, git, make_repo, spec_text

CALC = "def add(a, b):\n    return a + b\n"
TESTS = "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n"


class Site:
    """A project whose specs are 'completed' by committing their branches here (no nodes)."""

    def __init__(self, root: Path, specs: dict[str, dict], test_command: str | None = None, **settings):
        self.root = root
        self.repo = make_repo(root / "repo", {"calc.py": CALC, "test_calc.py": TESTS, "README.md": "# r\n"})
        folder = root / "specs" / "demo"
        folder.mkdir(parents=True)
        config = {"repository": str(self.repo), "require_tests": False, "retries": 1, "verify": "true", **settings}
        if test_command:
            config["test_command"] = test_command
        (folder / "project.yml").write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in config.items()))
        for task, fields in specs.items():
            (folder / f"{task}.md").write_text(spec_text(task, **fields))
        report = validate_project(root / "specs", "demo", None, "glm", display_root="specs")
        assert report.ok, report.summary()
        self.store = Store(root / "state.db")
        self.store.feed(report)
        self.config, problems = load_project(folder, "demo", "specs/demo/project.yml")
        assert self.config is not None, problems

    def complete(self, task: str, files: dict[str, str], start: str | None = None) -> str:
        """Commit ``files`` on the spec's branch from ``start`` (default: integration, else main)."""
        base = start or tip(str(self.repo), integration_branch("demo")) or "main"
        branch = spec_branch("demo", task)
        git(self.repo, "branch", "-f", branch, base)
        work = self.root / f"wt-{task}-{now()}"
        git(self.repo, "worktree", "add", "-q", str(work), branch)
        for name, text in files.items():
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            (work / name).write_text(text)
        git(work, "add", "-A")
        git(work, "commit", "-q", "-m", f"{task}")
        commit = git(work, "rev-parse", "HEAD").strip()
        git(self.repo, "worktree", "remove", "--force", str(work))
        row = self.store.spec("demo", task)
        number = self.store.db.execute("SELECT COUNT(*) FROM attempts WHERE project = 'demo' AND task_id = ?",
                                       (task,)).fetchone()[0] + 1
        with self.store.transaction() as db:
            db.execute("INSERT INTO attempts (project, task_id, number, revision, started_at, ended_at, outcome,"
                       " commit_sha, branch) VALUES ('demo', ?, ?, ?, ?, ?, 'succeeded', ?, ?)",
                       (task, number, row.revision, now(), now(), commit, branch))
        self.store.transition("demo", task, SpecState.RUNNING)
        self.store.transition("demo", task, SpecState.COMPLETED)
        return commit

    def verify_all(self, *tasks: str) -> None:
        for task in tasks:
            verdict = verify(self.store, self.config, task)
            assert verdict.ok, verdict.summary

    def state(self, task: str) -> str:
        return self.store.spec("demo", task).state.value

    def show(self, ref: str, path: str) -> str:
        return git(self.repo, "show", f"{ref}:{path}")

    def clean(self) -> bool:
        return git(self.repo, "status", "--porcelain") == "" and not list((self.root / "home").glob("scratch/*"))


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("SPECFLEET_HOME", str(tmp_path / "home"))


def three(tmp_path, **settings) -> Site:
    specs = {t: {"modifies": [f"{t.lower()}.py", "calc.py"], "verify": "python3 -m pytest -q"} for t in ("A", "B", "C")}
    return Site(tmp_path, specs, test_command="python3 -m pytest -q", **settings)


def test_three_branches_one_conflicting_two_land_conflict_reported_with_its_files(tmp_path):
    site = three(tmp_path)
    site.complete("A", {"a.py": "A = 1\n"})
    site.complete("B", {"calc.py": CALC + "\n\ndef sub(a, b):\n    return a - b\n"})
    site.complete("C", {"calc.py": CALC + "\n\ndef mul(a, b):\n    return a * b\n"})
    site.verify_all("A", "B", "C")
    result = merge_queue(site.store, site.config)
    assert result.merged == ["A", "B"] and result.conflicts == {"C": ["calc.py"]}
    assert site.state("A") == site.state("B") == "merged"
    assert site.state("C") == "queued" and "calc.py" in site.store.spec("demo", "C").reason
    events = [e for e in site.store.events("demo", "C") if e["to_state"] == "conflict"]
    assert events and events[0]["detail"]["files"] == ["calc.py"]
    integration = integration_branch("demo")
    assert "sub" in site.show(integration, "calc.py") and site.show(integration, "a.py") == "A = 1\n"
    assert "mul" not in site.show(integration, "calc.py")
    assert site.show("main", "calc.py") == CALC  # the base branch waits for review
    # C's branch keeps its work; the repository's working tree and scratch space are clean.
    assert "mul" in site.show(spec_branch("demo", "C"), "calc.py")
    assert site.clean()
    assert site.store.spec("demo", "C").attempts_used == 1


def test_a_branch_that_breaks_the_build_with_another_is_bisected_and_the_rest_land(tmp_path):
    specs = {f"S{i}": {"modifies": [f"m{i}.py", f"test_m{i}.py"]} for i in range(1, 7)}
    site = Site(tmp_path, specs, test_command="python3 -m pytest -q")
    # S4 passes alone but breaks the build together with S2 (both fine on their own).
    files = {i: {f"m{i}.py": f"V = {i}\n"} for i in range(1, 7)}
    files[2] = {"m2.py": "LIMIT = 1\n"}
    files[4] = {"m4.py": "V = 4\n",
                "test_m4.py": "import os\n\n\ndef test_limit():\n    assert not os.path.exists('m2.py')\n"}
    for i in range(1, 7):
        site.complete(f"S{i}", files[i])
    site.verify_all(*specs)
    result = merge_queue(site.store, site.config)
    assert sorted(result.merged) == ["S1", "S2", "S3", "S5", "S6"]
    assert list(result.broken) == ["S4"] and "test_limit" in result.broken["S4"]
    assert site.state("S4") == "queued"
    batch = site.store.db.execute("SELECT * FROM batches").fetchone()
    assert batch["status"] == "landed" and batch["test_runs"] == result.test_runs
    assert 3 <= result.test_runs < 2 * len(specs)  # fewer than testing each branch (with its retry)
    assert subprocess.run(["python3", "-m", "pytest", "-q"], cwd=tmp_path / "repo", capture_output=True).returncode == 0


def test_a_flaky_test_is_retried_once_before_bisecting(tmp_path):
    flag = tmp_path / "flaky-once"
    site = three(tmp_path)
    site.complete("A", {"a.py": "A = 1\n"})
    site.complete("B", {"b.py": "B = 1\n"})
    site.verify_all("A", "B")
    site.config = type(site.config)(**{**site.config.__dict__,
                                       "test_command": f"if [ ! -e {flag} ]; then touch {flag}; exit 1; fi; exit 0"})
    # The flake remembers its first run in a file outside the clone, which a sandboxed test
    # cannot write: this one runs unsandboxed (the retry is under test, not the sandbox).
    result = merge_queue(site.store, site.config, where=OnController(sandboxed=False))
    assert result.merged == ["A", "B"] and result.flaky == 1 and result.test_runs == 2


def test_a_gate_failure_never_merges(tmp_path):
    site = three(tmp_path)
    site.complete("A", {"a.py": "A = 1\n", "README.md": "# out of scope\n"})
    verdict = verify(site.store, site.config, "A")
    assert not verdict.ok and "README.md is outside modifies" in verdict.summary
    assert site.state("A") == "queued"
    assert merge_queue(site.store, site.config).merged == []
    assert tip(str(site.repo), integration_branch("demo")) is None
    check = site.store.db.execute("SELECT * FROM checks WHERE kind = 'verify'").fetchone()
    assert check["ok"] == 0 and "scope" in check["summary"]


def test_verify_runs_the_spec_command_and_the_project_tests_in_a_clean_checkout(tmp_path):
    site = three(tmp_path)
    (site.repo / "untracked_helper.py").write_text("raise SystemExit('the user working tree leaked in')\n")
    site.complete("A", {"a.py": "A = 1\n", "calc.py": "def add(a, b):\n    return a - b\n"})
    verdict = verify(site.store, site.config, "A")
    assert not verdict.ok
    assert [c["check"] for c in verdict.checks if not c["ok"]] == ["verify", "tests"]
    lesson = site.store.lessons("demo")[0]["text"]
    assert "controller verify failed" in lesson and "assert" in lesson  # the test output is the feedback


def test_rejection_reverts_tests_and_requeues_with_the_reason(tmp_path):
    site = three(tmp_path)
    site.complete("A", {"a.py": "A = 1\n"})
    site.complete("B", {"b.py": "B = 1\n"})
    site.verify_all("A", "B")
    merge_queue(site.store, site.config)
    listed = pending_review(site.store, site.config)
    assert [e["task_id"] for e in listed] == ["A", "B"] and "1 file changed" in listed[0]["diffstat"]
    done = reject(site.store, site.config, "A", "use the shared helper instead")
    assert done["reverted"] == ["A"]
    integration = integration_branch("demo")
    assert subprocess.run(["git", "-C", str(site.repo), "cat-file", "-e", f"{integration}:a.py"],
                          capture_output=True).returncode != 0
    assert site.show(integration, "b.py") == "B = 1\n"
    assert site.state("A") == "queued" and "use the shared helper" in site.store.spec("demo", "A").reason
    assert [e["task_id"] for e in pending_review(site.store, site.config)] == ["B"]
    revert = site.store.db.execute("SELECT * FROM checks WHERE kind = 'revert'").fetchone()
    assert revert["ok"] == 1
    with pytest.raises(LandingError, match="needs a reason"):
        reject(site.store, site.config, "B", "  ")


def test_promotion_moves_the_base_branch_only_to_a_tested_commit(tmp_path):
    site = three(tmp_path, merge_batch=1)
    site.complete("A", {"a.py": "A = 1\n"})
    site.complete("B", {"b.py": "B = 1\n"})
    site.verify_all("A", "B")
    merge_queue(site.store, site.config)
    tested = {r["commit_sha"] for r in site.store.db.execute("SELECT commit_sha FROM checks WHERE kind = 'batch'")}
    assert len(tested) == 2
    with pytest.raises(LandingError, match="approve or reject A first"):
        promote(site.store, site.config, ["B"])
    done = promote(site.store, site.config, ["A"])
    main = git(site.repo, "rev-parse", "main").strip()
    assert main == done["commit"] and main in tested
    assert site.show("main", "a.py") == "A = 1\n" and (site.repo / "a.py").read_text() == "A = 1\n"  # checked out: ff
    assert [e["task_id"] for e in pending_review(site.store, site.config)] == ["B"]
    promote(site.store, site.config, None)
    assert git(site.repo, "rev-parse", "main").strip() == tip(str(site.repo), integration_branch("demo"))


def test_auto_promotion_and_push_to_the_remote(tmp_path):
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True)
    site = three(tmp_path, promote="auto", push="origin")
    git(site.repo, "remote", "add", "origin", str(remote))
    site.complete("A", {"a.py": "A = 1\n"})
    site.verify_all("A")
    result = merge_queue(site.store, site.config)
    assert result.promoted == tip(str(site.repo), "main") == git(remote, "rev-parse", "main").strip()


def test_a_crash_after_integration_moved_is_resumed_without_merging_twice(tmp_path):
    site = three(tmp_path)
    site.complete("A", {"a.py": "A = 1\n"})
    site.verify_all("A")
    queue = MergeQueue(site.store, site.config)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("controller killed")

    queue._record_merged = crash  # the branch moved, the store was not updated
    with pytest.raises(KeyboardInterrupt):
        with queue_lock("demo"):
            queue.run()
    moved = tip(str(site.repo), integration_branch("demo"))
    assert moved and site.state("A") == "verified"
    result = merge_queue(site.store, site.config)
    assert result.resumed == ["A"] and result.merged == [] and site.state("A") == "merged"
    assert tip(str(site.repo), integration_branch("demo")) == moved
    assert site.store.db.execute("SELECT status FROM batches").fetchone()[0] == "abandoned"


def test_a_crash_before_integration_moved_leaves_it_at_a_tested_commit(tmp_path):
    site = three(tmp_path)
    site.complete("A", {"a.py": "A = 1\n"})
    site.verify_all("A")
    merge_queue(site.store, site.config)
    before = tip(str(site.repo), integration_branch("demo"))
    site.complete("B", {"b.py": "B = 1\n"})
    site.verify_all("B")
    queue = MergeQueue(site.store, site.config)
    queue._test = lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt("killed during the batch test"))
    with pytest.raises(KeyboardInterrupt):
        queue.run()
    assert tip(str(site.repo), integration_branch("demo")) == before
    assert site.state("B") == "verified"
    assert merge_queue(site.store, site.config).merged == ["B"]


def test_dependents_wait_for_their_dependency_to_merge(tmp_path):
    site = Site(tmp_path, {"A": {"modifies": ["a.py"]}, "B": {"modifies": ["b.py"], "depends_on": ["A"]}})
    site.complete("A", {"a.py": "A = 1\n"})
    site.verify_all("A")
    merge_queue(site.store, site.config)
    site.complete("B", {"b.py": "import a\n"})  # from the integration tip: holds A's code
    site.verify_all("B")
    assert site.show(spec_branch("demo", "B"), "a.py") == "A = 1\n"
    assert merge_queue(site.store, site.config).merged == ["B"]


# -- the optional LLM review, against a real HTTP server on loopback ---------------------------

KEY = "sk-review-canary-51c7e2"


def endpoint(server) -> llmreview.Endpoint:
    return llmreview.Endpoint(server.url, "review-model", KEY, timeout=10, retries=2)


def test_a_required_review_that_rejects_sends_the_spec_back_with_the_reasons(tmp_path, chat):
    site = three(tmp_path, review="required")
    server = chat((429, "slow down"), completion('{"verdict": "reject", "reasons": ["do-not-do: touched calc.py"]}'))
    site.complete("A", {"a.py": "A = 1\n"})
    verdict = verify(site.store, site.config, "A", endpoint=endpoint(server))
    assert not verdict.ok and site.state("A") == "queued"
    assert "touched calc.py" in site.store.lessons("demo")[0]["text"]
    # The 429 was retried by the client; the request carried the spec and the diff, the key only as auth.
    assert len(server.requests) == 2 and server.requests[-1]["path"] == "/v1/chat/completions"
    sent = server.requests[-1]["body"]["messages"][1]["content"]
    assert "Do the thing" in sent and "+A = 1" in sent and server.requests[-1]["auth"] == f"Bearer {KEY}"
    dump = "\n".join(site.store.db.iterdump())
    assert KEY not in dump and "reject by review-model" in dump


def test_an_advisory_review_is_stored_and_shown_but_never_blocks(tmp_path, chat):
    site = three(tmp_path, review="advisory")
    server = chat(completion('Sure. {"verdict": "reject", "reasons": ["naming"]}'), completion("I cannot help"))
    site.complete("A", {"a.py": "A = 1\n"})
    site.complete("B", {"b.py": "B = 1\n"})
    assert verify(site.store, site.config, "A", endpoint=endpoint(server)).ok
    assert verify(site.store, site.config, "B", endpoint=endpoint(server)).ok  # not JSON: unavailable
    merge_queue(site.store, site.config)
    queue = {e["task_id"]: e["review"] for e in pending_review(site.store, site.config)}
    assert queue["A"].startswith("reject by review-model: naming")
    assert queue["B"].startswith("unavailable: the answer is not JSON")


def test_a_required_review_that_is_unavailable_leaves_the_spec_completed(tmp_path, chat):
    site = three(tmp_path, review="required")
    server = chat((503, "down"), (503, "down"), (503, "down"))
    site.complete("A", {"a.py": "A = 1\n"})
    with pytest.raises(LandingError, match="required LLM review is unavailable.*HTTP 503"):
        verify(site.store, site.config, "A", endpoint=endpoint(server))
    assert site.state("A") == "completed" and len(server.requests) == 3


NODES = ["node-1", "node-2"]


@pytest.mark.parametrize("verify_on,unsafe,runs_on,expected", [
    # nothing set: the controller, sandboxed, silently
    (None, False, None, LandingPlace(node=None, sandboxed=True)),
    ("", False, "localhost", LandingPlace(node=None, sandboxed=True)),
    # the operator's opt-out: the controller unsandboxed (warned about below)
    (None, True, None, LandingPlace(node=None, sandboxed=False)),
    # a node of specfleet_nodes the task is delegated to; the opt-out means nothing there
    ("node-2", False, "node-2", LandingPlace(node="node-2")),
    ("node-2", True, "node-2", LandingPlace(node="node-2")),
])
def test_where_the_projects_commands_run(verify_on, unsafe, runs_on, expected):
    place = landing_place(verify_on, unsafe, NODES, runs_on)
    assert place == expected
    assert (place.warning is not None) == (place.node is None and not place.sandboxed)
    if place.warning:
        assert "UNSANDBOXED" in place.warning and "specfleet_unsafe_controller_verify" in place.warning


@pytest.mark.parametrize("verify_on,runs_on,message", [
    ("node-9", "node-9", "specfleet_verify_on: 'node-9' is not a host of the inventory group specfleet_nodes"),
    ("localhost", "localhost", "'localhost' is not a host of the inventory group specfleet_nodes"),
    ("node-2", "localhost", "specfleet_verify_on is node-2, but the task runs on localhost: delegate it to the node"),
    ("node-2", None, "specfleet_verify_on is node-2, but the task runs on its own host: delegate it to the node"),
])
def test_a_landing_node_must_be_a_worker_node_the_task_is_delegated_to(verify_on, runs_on, message):
    with pytest.raises(LandingError, match=re.escape(message)):
        landing_place(verify_on, False, NODES, runs_on)


LANDING_MODULES = {"specfleet_verify", "specfleet_merge", "specfleet_review"}


def landing_tasks(play_or_block: dict):
    """Every task of a play or block (blocks flattened), with the delegate_to it inherits."""
    for key in ("tasks", "block", "rescue", "always"):
        for task in play_or_block.get(key) or []:
            if any(k in task for k in ("block", "rescue", "always")):
                for inner in landing_tasks(task):
                    yield {"delegate_to": task.get("delegate_to"), **inner}
            elif LANDING_MODULES & set(task):
                yield task


@pytest.mark.parametrize("playbook", sorted(str(p.relative_to(REPO_ROOT / "playbooks"))
                                             for p in (REPO_ROOT / "playbooks").glob("**/*.yml")))
def test_playbooks_delegate_landing_to_the_one_landing_host_without_connection_expressions(playbook):
    data = yaml.safe_load((REPO_ROOT / "playbooks" / playbook).read_text()) or []
    # A task file (tasks/spec_pipeline.yml) is one play's task list.
    plays = [{"name": playbook, "tasks": data}] if playbook.startswith("tasks/") else data
    for play in plays:
        tasks = list(landing_tasks(play))
        assert all(t.get("delegate_to") == "{{ specfleet_landing_host }}" for t in tasks), tasks
        # A play-level connection would hold for a node the landing tasks are delegated to.
        assert not tasks or "connection" not in play, play["name"]
        assert not any("connection" in t for t in play.get("tasks") or []), play["name"]


def test_the_shipped_inventories_declare_the_landing_host_and_a_local_controller():
    for inventory in ("local", "production"):
        shared = REPO_ROOT / "inventory" / inventory / "group_vars" / "all" / "landing.yml"
        assert shared.resolve() == (REPO_ROOT / "inventory" / "shared" / "landing.yml").resolve()
    declared = yaml.safe_load((REPO_ROOT / "inventory" / "shared" / "landing.yml").read_text())
    assert declared == {"specfleet_landing_host": "{{ specfleet_verify_on | default('localhost') }}"}
    controllers = [yaml.safe_load((REPO_ROOT / "inventory" / "local" / "controller.yml").read_text()),
                   yaml.safe_load((REPO_ROOT / "inventory" / "production" / "hosts.yml").read_text())]
    assert all(c["all"]["hosts"]["localhost"]["ansible_connection"] == "local" for c in controllers)
