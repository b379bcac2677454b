"""The node-side runner's parts, with real git and real processes (no cluster needed)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from specfleet.attempt import executors, prompt, workspace
from specfleet.node import runner
from tests.conftest import AGENT_USER, REPO_ROOT, git, make_repo

FAKE = REPO_ROOT / "tests" / "fixtures" / "fake_agent.py"
RUNNER = REPO_ROOT / "specfleet" / "node" / "runner.py"


def diff_of(repo: Path) -> tuple[list[runner.Change], dict]:
    git(repo, "add", "-A")
    changes = runner.parse_name_status(git(repo, "diff", "--cached", "--name-status", "-z", "-M", "HEAD"))
    added = runner.added_lines(git(repo, "diff", "--cached", "-U0", "HEAD"))
    return changes, added


@pytest.fixture
def repo(tmp_path):
    return make_repo(tmp_path / "r", {"app.py": "# TODO: old note\nX = 1\n", "tests/test_app.py": "def test_x():\n    pass\n",
                                      "ui/form.jsx": "<input />\n"})


def test_stub_gate_looks_only_at_added_lines(repo):
    (repo / "app.py").write_text("# TODO: old note\nX = 2\n")
    changes, added = diff_of(repo)
    gates = {g["gate"]: g for g in runner.run_gates(changes, added, ["app.py"], [], "1 passed")}
    assert gates["stubs"]["ok"], gates["stubs"]
    (repo / "app.py").write_text("# TODO: old note\nX = 2\ndef f():\n    raise NotImplementedError\n# FIXME later\n")
    (repo / "ui/form.jsx").write_text('<input placeholder="Name" />\n')
    changes, added = diff_of(repo)
    gates = {g["gate"]: g for g in runner.run_gates(changes, added, ["app.py", "ui/"], [], "1 passed")}
    assert not gates["stubs"]["ok"]
    assert [p.split(":")[1] for p in gates["stubs"]["problems"]] == ["4", "5"]   # not the JSX attribute


def test_scope_gate_names_files_outside_modifies_and_allows_test_paths(repo):
    (repo / "app.py").write_text("X = 3\n")
    (repo / "other.py").write_text("Y = 1\n")
    (repo / "tests/test_more.py").write_text("def test_y():\n    assert True\n")
    changes, added = diff_of(repo)
    gates = {g["gate"]: g for g in runner.run_gates(changes, added, ["app.py"], ["tests/"], "2 passed")}
    assert gates["scope"]["problems"] == ["other.py is outside modifies"]


def test_renaming_a_file_out_of_scope_counts_both_paths(repo):
    git(repo, "mv", "app.py", "lib.py")
    changes, added = diff_of(repo)
    gates = {g["gate"]: g for g in runner.run_gates(changes, added, ["lib.py"], [], "1 passed")}
    assert gates["scope"]["problems"] == ["app.py is outside modifies"]


def test_deleted_or_skipped_tests_fail(repo):
    (repo / "tests/test_app.py").unlink()
    changes, added = diff_of(repo)
    gates = {g["gate"]: g for g in runner.run_gates(changes, added, ["tests/"], [], "1 passed")}
    assert gates["tests_kept"]["problems"] == ["tests/test_app.py deleted (a test file)"]
    git(repo, "reset", "-q", "--hard")
    (repo / "tests/test_app.py").write_text("import pytest\n\n\n@pytest.mark.skip\ndef test_x():\n    pass\n")
    changes, added = diff_of(repo)
    gates = {g["gate"]: g for g in runner.run_gates(changes, added, ["tests/"], [], "1 passed")}
    assert not gates["tests_kept"]["ok"] and "tests/test_app.py:4" in gates["tests_kept"]["detail"]


@pytest.mark.parametrize("output,count", [
    ("....\n4 passed in 0.1s", 4), ("Ran 3 tests in 0.001s\n\nOK", 3), ("  5 passing (20ms)", 5),
    ("ok  \texample.com/pkg\t0.01s", 1), ("test result: ok. 7 passed; 0 failed", 7),
    ("collected 0 items\n\nno tests ran in 0.01s", 0), ("all good", 0), ("", 0),
])
def test_tests_counted(output, count):
    assert runner.tests_counted(output) == count


def test_empty_diff_and_a_verify_that_ran_nothing_fail(repo):
    changes, added = diff_of(repo)
    gates = {g["gate"]: g for g in runner.run_gates(changes, added, ["app.py"], [], "nothing to see")}
    assert not gates["diff"]["ok"] and not gates["tests_ran"]["ok"]


@pytest.mark.parametrize("output,patterns,limited", [
    ("API Error: 429 Too Many Requests", (), True),
    ('Error: {"type":"error","error":{"type":"rate_limit_error","message":"slow"}}', (), True),
    ("ERROR litellm.RateLimitError: RateLimitError: OpenAIException - Rate limit reached", (), True),
    ("[API Error: status 429 RESOURCE_EXHAUSTED]", (), True),
    # Not a rate limit: a 429 in a file path of a warning, prose about rate limiting, a token module.
    ("warning: skipping /tmp/build-429/cache.json", (), False),
    ("Added a rate limiter to api/limits.py; all 12 tests pass", (), False),
    ("the authentication token module now checks capacity", (), False),
    ("error: please SLOW DOWN", ["slow down"], True),
    ("error: 429", ["slow down"], False),
])
def test_a_rate_limit_is_read_from_error_lines_only(output, patterns, limited):
    assert bool(runner.Executor("x", rate_limit_patterns=list(patterns)).rate_limit_line(output)) is limited


def test_prompt_placement_follows_the_cli():
    assert runner.Executor("g", command=["gemini", "--yolo", "--prompt"], prompt="argument").argv("do it", "/p") == \
        ["gemini", "--yolo", "--prompt", "do it"]
    assert runner.Executor("a", command=["aider", "--message-file"], prompt="file").argv("x", "/r/p.md") == \
        ["aider", "--message-file", "/r/p.md"]
    assert runner.Executor("c", command=["claude", "-p"]).argv("x", "/p") == ["claude", "-p"]


def test_redactor_replaces_every_secret():
    redact = runner.Redactor(["sk-abcdef123", "xyz"])
    assert redact("key=sk-abcdef123 short=xyz") == "key=*** short=xyz"


# -- prompt -------------------------------------------------------------------------------

SPEC = "---\ntask_id: S01\n---\n## Goal\n" + "Build the thing. " * 50


def test_the_spec_is_never_trimmed_and_layers_shrink_in_order():
    big = "x" * 5000
    built = prompt.build(SPEC, "S01", instructions=big, memory=[f"- lesson {i} " + "m" * 300 for i in range(20)],
                         shared_context=big, siblings=[f"- sib {i} " + "s" * 200 for i in range(30)],
                         environment="e" * 2000, budget=14_000)
    assert SPEC.strip() in built.text and len(built.text) <= 14_000
    assert [item.split(":")[0] for item in built.left_out] == ["memory", "siblings", "environment"]
    assert "Left out to fit the prompt budget" in built.text
    assert built.sizes["instructions"] == 5000 and built.sizes["shared_context"] == 5000
    tiny = prompt.build(SPEC, "S01", instructions=big, shared_context=big, environment="e", budget=100)
    assert SPEC.strip() in tiny.text and tiny.sizes["instructions"] == 0 and tiny.sizes["shared_context"] == 0


def test_a_prompt_within_budget_has_every_layer_whole():
    built = prompt.build(SPEC, "S01", instructions="rules", memory=["- a"], shared_context="contract",
                         siblings=["- S02"], environment="node-1")
    assert built.left_out == [] and "Left out" not in built.text
    order = [built.text.index(t) for t in ("rules", "- a", "contract", "- S02", "node-1", "Build the thing")]
    assert order == sorted(order)


# -- executors ----------------------------------------------------------------------------

def test_executor_definitions_are_checked_field_by_field():
    with pytest.raises(executors.ExecutorError, match=r"specfleet_executors\.c\.command"):
        executors.chain({"c": {"command": "claude -p"}}, "c")
    with pytest.raises(executors.ExecutorError, match=r"specfleet_executors\.c\.promt .*not an executor setting"):
        executors.chain({"c": {"command": ["x"], "promt": "stdin"}}, "c")
    with pytest.raises(executors.ExecutorError, match=r"specfleet_executors\.c\.fallback names 'nope'"):
        executors.chain({"c": {"command": ["x"], "fallback": "nope"}}, "c")
    with pytest.raises(executors.ExecutorError, match="rate_limit_patterns"):
        executors.chain({"c": {"command": ["x"], "rate_limit_patterns": ["("]}}, "c")
    cycle = executors.chain({"a": {"command": ["x"], "fallback": "b"}, "b": {"command": ["y"], "fallback": "a"}}, "a")
    assert [e["name"] for e in cycle] == ["a", "b"]


def test_secrets_come_from_variables_and_missing_fallback_keys_are_left_out():
    defs = {"a": {"command": ["x"], "env_from_vars": {"KEY": "vault_a"}, "fallback": "b"},
            "b": {"command": ["y"], "env_from_vars": {"KEY": "vault_b"}}}
    chain, secrets, notes = executors.runner_chain(executors.chain(defs, "a"), 60, {"vault_a": "s1"}.get)
    assert [e["name"] for e in chain] == ["a"] and secrets == {"a": {"KEY": "s1"}} and "vault_b" in notes[0]
    assert "s1" not in json.dumps(chain)
    with pytest.raises(executors.ExecutorError, match="vault_a"):
        executors.runner_chain(executors.chain(defs, "a"), 60, {}.get)


def test_shipped_executor_definitions_are_valid():
    import yaml
    data = yaml.safe_load((REPO_ROOT / "inventory/shared/executors.yml").read_text())
    for name in data["specfleet_executors"]:
        assert executors.chain(data["specfleet_executors"], name)[0]["name"] == name


# -- workspace (controller git, node mirror scripts) ---------------------------------------

def test_bundle_sends_only_what_the_mirror_lacks(tmp_path, repo):
    mirror = str(tmp_path / "m" / "p.git")
    run = str(tmp_path / "run")
    probe = subprocess.run(["sh", "-c", workspace.mirror_probe_script(mirror, run)], capture_output=True, text=True)
    home, attached, tips = workspace.parse_probe(probe.stdout)
    assert probe.returncode == 0 and not attached and tips == [] and home
    start = workspace.resolve_start(str(repo), False, "p", "main", [])
    refs = workspace.bundle_for_node(str(repo), start, tips, tmp_path / "b1.bundle")
    # The start commit also travels under a ref of its own (see the next test), unique per bundle.
    assert refs[0] == "refs/heads/main" and refs[1].startswith(f"refs/specfleet/start/{start.base}/") and len(refs) == 2
    fetched = subprocess.run(["sh", "-c", workspace.mirror_fetch_script(mirror, str(tmp_path / "b1.bundle"), refs)])
    assert fetched.returncode == 0 and not (tmp_path / "b1.bundle").exists()
    _h, _a, tips = workspace.parse_probe(subprocess.run(["sh", "-c", workspace.mirror_probe_script(mirror, run)],
                                                        capture_output=True, text=True).stdout)
    assert tips == [start.base, start.base]
    assert workspace.bundle_for_node(str(repo), start, tips, tmp_path / "b2.bundle") == []
    (repo / "app.py").write_text("X = 9\n")
    git(repo, "commit", "-qam", "more")
    start = workspace.resolve_start(str(repo), False, "p", "main", [])
    refs = workspace.bundle_for_node(str(repo), start, tips, tmp_path / "b3.bundle")
    assert refs[0] == "refs/heads/main" and refs[1].startswith(f"refs/specfleet/start/{start.base}/") and len(refs) == 2
    listed = git(repo, "bundle", "list-heads", str(tmp_path / "b3.bundle"))
    verify = subprocess.run(["git", "bundle", "verify", str(tmp_path / "b3.bundle")], cwd=mirror, capture_output=True)
    assert start.base in listed and verify.returncode == 0      # thin: it needs what the mirror has
    Path(run, "wrapper_pid").write_text("1\n")
    assert workspace.parse_probe(subprocess.run(["sh", "-c", workspace.mirror_probe_script(mirror, run)],
                                                capture_output=True, text=True).stdout)[1] is True


def test_the_bundle_carries_the_start_commit_even_if_its_branch_moved_away(tmp_path, repo):
    # The merge queue rebuilds the integration branch while a start is being prepared: the
    # branch no longer contains the start commit when the bundle is written. The node must
    # still get that commit (it once failed with "reference is not a tree").
    start = workspace.resolve_start(str(repo), False, "p", "main", [])
    git(repo, "checkout", "-q", "--orphan", "rebuilt")
    (repo / "other.py").write_text("Y = 1\n")
    git(repo, "add", "other.py")
    git(repo, "commit", "-qm", "unrelated history")
    git(repo, "branch", "-f", "main", "rebuilt")
    bundle = tmp_path / "moved.bundle"
    refs = workspace.bundle_for_node(str(repo), start, [], bundle)
    mirror = tmp_path / "mirror.git"
    git(tmp_path, "init", "-q", "--bare", str(mirror))
    fetched = subprocess.run(["sh", "-c", workspace.mirror_fetch_script(str(mirror), str(bundle), refs)])
    assert fetched.returncode == 0
    assert git(mirror, "cat-file", "-t", start.base).strip() == "commit"
    assert git(repo, "for-each-ref", "refs/specfleet/").strip() == ""  # nothing left in the user's repository


def test_starts_bundling_the_same_commit_at_once_do_not_trip_over_each_other(tmp_path, repo):
    # Several workers start specs from the same integration tip at the same moment.
    start = workspace.resolve_start(str(repo), False, "p", "main", [])
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda i: workspace.bundle_for_node(str(repo), start, [], tmp_path / f"c{i}.bundle"),
                                range(16)))
    assert all(refs[0] == "refs/heads/main" and len(refs) == 2 for refs in results)
    assert len({refs[1] for refs in results}) == 16
    assert git(repo, "for-each-ref", "refs/specfleet/").strip() == ""


def test_concurrent_first_starts_on_a_node_never_read_a_half_made_mirror(tmp_path):
    # Several specs start on a fresh node at once: one creates the mirror, the others wait for it.
    for round_ in range(5):
        mirror = str(tmp_path / f"m{round_}" / "p.git")
        probes = [subprocess.Popen(["sh", "-c", workspace.mirror_probe_script(mirror, str(tmp_path / f"r{round_}-{i}"))],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(8)]
        for probe in probes:
            out, err = probe.communicate(timeout=60)
            assert probe.returncode == 0 and "TIPS" in out, err
        assert Path(mirror, "specfleet.ready").exists()


def test_a_dependency_not_merged_into_integration_is_named(repo):
    with pytest.raises(workspace.GitError, match="dependencies not merged into main: S00"):
        workspace.resolve_start(str(repo), False, "p", "main", ["S00"])
    git(repo, "branch", "specfleet/p/integration")
    assert workspace.resolve_start(str(repo), False, "p", "main", []).base_ref == "refs/heads/specfleet/p/integration"
    git(repo, "checkout", "-q", "-b", "specfleet/p/S00")
    (repo / "dep.py").write_text("D = 1\n")
    git(repo, "add", "dep.py")
    git(repo, "commit", "-q", "-m", "S00")
    with pytest.raises(workspace.GitError, match="not merged into specfleet/p/integration: S00"):
        workspace.resolve_start(str(repo), False, "p", "main", ["S00"])
    git(repo, "branch", "-f", "specfleet/p/integration", "specfleet/p/S00")
    start = workspace.resolve_start(str(repo), False, "p", "main", ["S00"])
    assert start.refs == {"refs/heads/specfleet/p/integration": git(repo, "rev-parse", "specfleet/p/S00").strip()}


# -- a whole attempt on this machine: kill -9 mid-run, then the wrapper's finalize ----------

def make_run(tmp_path: Path, repo: Path, calls: list[dict], executor_timeout: int = 60) -> Path:
    mirror = tmp_path / "mirror.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(repo), str(mirror)], check=True)
    run = tmp_path / "run"
    run.mkdir()
    scenario = tmp_path / "scenario.json"
    scenario.write_text(json.dumps({"*": calls}))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "claude").symlink_to(FAKE)
    base = git(repo, "rev-parse", "HEAD").strip()
    (run / "job.json").write_text(json.dumps({
        "project": "p", "task_id": "S01", "attempt": 1, "run_id": "r1", "mirror": str(mirror),
        "workspace": str(tmp_path / "ws"), "branch": "specfleet/p/S01", "base": base,
        "verify": "python3 -m pytest -q", "retries": 0, "modifies": ["app.py"], "agent_user": AGENT_USER,
        "executors": [{"name": "claude", "command": [str(bin_dir / "claude"), "-p"], "timeout_s": executor_timeout,
                       "env": {"FAKE_AGENT_SCENARIO": str(scenario)}, "secret_env": ["TOKEN"]}]}))
    (run / "secrets.json").write_text(json.dumps({"claude": {"TOKEN": "tok-secret-value"}}))
    (run / "prompt.md").write_text("# specfleet task S01\n\nDo it.\n")
    return run


def test_a_successful_attempt_commits_and_bundles(tmp_path, repo):
    run = make_run(tmp_path, repo, [{"write": {"app.py": "# TODO: old note\nX = 5\n"}, "print_env": ["TOKEN"]}])
    result = subprocess.run([sys.executable, str(RUNNER), "run", str(run)], capture_output=True, text=True)
    status = json.loads((run / "status.json").read_text())
    assert result.returncode == 0 and status["state"] == "succeeded" and status["final"], status
    assert status["exit_code"] == 0
    assert not (run / "secrets.json").exists()
    assert "TOKEN=***" in next(run.glob("round-1.agent.*.log")).read_text()
    assert "tok-secret-value" not in "".join(p.read_text(errors="replace") for p in run.iterdir() if p.is_file())
    heads = git(repo, "bundle", "list-heads", str(run / "result.bundle"))
    assert status["commit"] in heads


def test_sigkill_of_the_runner_is_finalised_by_the_wrapper_and_children_die(tmp_path, repo):
    run = make_run(tmp_path, repo, [{"hang": True}])
    proc = subprocess.Popen([sys.executable, str(RUNNER), "run", str(run)], start_new_session=True)
    hung = tmp_path / "ws" / ".git" / "fake-agent-hung"
    deadline = time.monotonic() + 60
    while not hung.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    agent_pid, child_pid = map(int, hung.read_text().split())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert json.loads((run / "status.json").read_text())["final"] is False
    subprocess.run([sys.executable, str(RUNNER), "finalize", str(run), "137"], check=True)
    status = json.loads((run / "status.json").read_text())
    assert status["final"] and status["state"] == "killed" and "SIGKILL" in status["error"]
    assert "agent round 1" in status["error"]
    for pid in (agent_pid, child_pid):
        deadline = time.monotonic() + 10
        while Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1][:3] \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1][:3]


def test_sigterm_kills_the_agent_group_and_finalises(tmp_path, repo):
    run = make_run(tmp_path, repo, [{"hang": True}])
    proc = subprocess.Popen([sys.executable, str(RUNNER), "run", str(run)])
    hung = tmp_path / "ws" / ".git" / "fake-agent-hung"
    deadline = time.monotonic() + 60
    while not hung.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    status = json.loads((run / "status.json").read_text())
    assert status["final"] and status["state"] == "killed" and "signal 15" in status["error"]
    assert status["exit_code"] == 143


def test_a_used_workspace_is_never_reused(tmp_path, repo):
    run = make_run(tmp_path, repo, [{"write": {"app.py": "X = 1\n"}}])
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "left-over").write_text("someone's work")
    subprocess.run([sys.executable, str(RUNNER), "run", str(run)], capture_output=True)
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "failed" and "not empty" in status["error"] and status["exit_code"] == 1
    assert (tmp_path / "ws" / "left-over").read_text() == "someone's work"


def test_a_secret_written_into_the_code_fails_closed_and_stays_out_of_every_file(tmp_path, repo):
    run = make_run(tmp_path, repo, [{"write": {"app.py": "TOKEN = 'tok-secret-value'\n"}}])
    subprocess.run([sys.executable, str(RUNNER), "run", str(run)], capture_output=True)
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "failed" and "gate secrets" in status["error"] and "claude:TOKEN" in status["error"]
    assert not (run / "result.bundle").exists()
    assert "tok-secret-value" not in "".join(p.read_text(errors="replace") for p in run.iterdir() if p.is_file())


def test_an_unreadable_job_file_is_reported_and_the_secrets_file_removed(tmp_path, repo):
    run = make_run(tmp_path, repo, [{}])
    (run / "job.json").write_text("{not json")
    assert subprocess.run([sys.executable, str(RUNNER), "run", str(run)], capture_output=True).returncode == 1
    status = json.loads((run / "status.json").read_text())
    assert status["final"] and "could not start" in status["error"] and not (run / "secrets.json").exists()


def test_an_agent_that_keeps_retrying_a_rate_limit_is_stopped_and_the_fallback_runs(tmp_path, repo):
    # Claude Code and Gemini CLI retry a 429 by themselves for minutes; the runner stops a run
    # that is still going rate_limit_grace after a rate-limit error line, and moves on.
    run = make_run(tmp_path, repo, [{"stderr": "API Error: 429 Too Many Requests (retrying)", "hang": True}])
    job = json.loads((run / "job.json").read_text())
    limited = dict(job["executors"][0], rate_limit_grace_s=1, backoff_s=0, timeout_s=600)
    backup = dict(job["executors"][0], name="backup", env={"FAKE_AGENT_SCENARIO": str(tmp_path / "backup.json")})
    (tmp_path / "backup.json").write_text(json.dumps({"*": [{"write": {"app.py": "X = 9\n"}}]}))
    job["executors"] = [limited, backup]
    (run / "job.json").write_text(json.dumps(job))
    subprocess.run([sys.executable, str(RUNNER), "run", str(run)], capture_output=True, timeout=300)
    status = json.loads((run / "status.json").read_text())
    tries = status["rounds"][0]["tries"]
    assert [t["executor"] for t in tries] == ["claude", "backup"], tries
    assert tries[0]["rate_limited"] and not tries[0]["timed_out"] and "429" in tries[0]["error"]
    assert status["state"] == "succeeded" and status["executor"] == "backup", \
        (status.get("error"), status["rounds"][0].get("problems"))


def test_the_attempt_time_limit_bounds_each_run(tmp_path, repo):
    run = make_run(tmp_path, repo, [{"hang": True}], executor_timeout=3600)
    job = json.loads((run / "job.json").read_text())
    job["attempt_timeout_s"] = 5            # minus a 0.5 s reserve: the agent gets about 4.5 s
    (run / "job.json").write_text(json.dumps(job))
    subprocess.run([sys.executable, str(RUNNER), "run", str(run)], capture_output=True, timeout=120)
    status = json.loads((run / "status.json").read_text())
    # The executor's own limit is an hour: only the attempt's budget can have ended the run.
    assert status["final"] and status["rounds"][0]["timed_out"] is True


# -- keys from the node's credentials file (bootstrap wrote it) -----------------------------

def node_key_run(tmp_path: Path, repo: Path, fallback_var: str = "vault_b") -> Path:
    """A run whose controller shipped no key: the runner takes it from the credentials file."""
    run = make_run(tmp_path, repo, [{"write": {"app.py": "X = 6\n"}, "print_env": ["TOKEN"]}])
    (run / "secrets.json").unlink()
    job = json.loads((run / "job.json").read_text())
    first = dict(job["executors"][0], node_secret_env={"TOKEN": "vault_a"})
    job["executors"] = [first, dict(first, name="backup", node_secret_env={"TOKEN": fallback_var})]
    job["credentials_file"] = str(tmp_path / "credentials.env")
    (run / "job.json").write_text(json.dumps(job))
    return run


def test_a_key_the_controller_lacks_comes_from_the_nodes_credentials_file(tmp_path, repo):
    run = node_key_run(tmp_path, repo, fallback_var="vault_missing")
    (tmp_path / "credentials.env").write_text("# written by bootstrap\nvault_a='node-side key '\\''x'\\'''\n")
    result = subprocess.run([sys.executable, str(RUNNER), "run", str(run)], capture_output=True, text=True)
    status = json.loads((run / "status.json").read_text())
    assert result.returncode == 0 and status["state"] == "succeeded", status
    assert "TOKEN=***" in next(run.glob("round-1.agent.*.log")).read_text()
    assert "node-side key" not in "".join(p.read_text(errors="replace") for p in run.iterdir() if p.is_file())
    # The fallback's key is in neither place: it is left out, and the status says why.
    assert any("backup needs vault_missing" in note and "left out" in note for note in status["notes"])


def test_a_key_in_neither_place_fails_the_attempt_naming_the_variable_and_the_file(tmp_path, repo):
    run = node_key_run(tmp_path, repo)
    (tmp_path / "credentials.env").write_text("vault_b='only the fallback has one'\n")
    assert subprocess.run([sys.executable, str(RUNNER), "run", str(run)], capture_output=True).returncode == 1
    status = json.loads((run / "status.json").read_text())
    assert status["final"] and status["state"] == "failed"
    assert "vault_a" in status["error"] and str(tmp_path / "credentials.env") in status["error"]


def test_the_controller_leaves_to_the_node_only_the_keys_bootstrap_recorded_there():
    defs = {"a": {"command": ["x"], "env_from_vars": {"KEY": "vault_a"}, "fallback": "b"},
            "b": {"command": ["y"], "env_from_vars": {"KEY": "vault_b"}}}
    chain, secrets, notes = executors.runner_chain(executors.chain(defs, "a"), 60, {}.get, on_node={"vault_a"})
    assert [e["name"] for e in chain] == ["a"] and secrets == {}
    assert chain[0]["node_secret_env"] == {"KEY": "vault_a"} and chain[0]["secret_env"] == ["KEY"]
    assert "vault_b" in notes[0]
    # A key the controller has is shipped as before, even if the node has one too.
    chain, secrets, _ = executors.runner_chain(executors.chain(defs, "a"), 60, {"vault_a": "k1"}.get,
                                               on_node={"vault_a"})
    assert secrets == {"a": {"KEY": "k1"}} and chain[0]["node_secret_env"] == {}


def test_the_runner_version_is_a_fingerprint_of_its_files(tmp_path):
    for name in runner.FILES:
        (tmp_path / name).write_bytes((RUNNER.parent / name).read_bytes())
    same = subprocess.run([sys.executable, str(tmp_path / "runner.py"), "version"], capture_output=True, text=True)
    assert same.stdout.strip() == runner.runner_version() and len(runner.runner_version()) == 12
    (tmp_path / "paths.py").write_text((tmp_path / "paths.py").read_text() + "\n# changed\n")
    assert runner.runner_version(str(tmp_path)) != runner.runner_version()


def test_a_mirror_without_the_start_commit_is_the_nodes_fault_not_the_specs(tmp_path, repo):
    run = make_run(tmp_path, repo, [{"write": {"app.py": "X = 7\n"}}])
    job = json.loads((run / "job.json").read_text())
    job["base"] = "0b1f0ac2be819cc84b75b4e9c452b6204313ce3d"  # a commit the mirror never received
    (run / "job.json").write_text(json.dumps(job))
    assert subprocess.run([sys.executable, str(RUNNER), "run", str(run)], capture_output=True).returncode == 1
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "failed" and status["infrastructure"] is True
    assert "lacks the start commit 0b1f0ac2be81" in status["error"]


def test_every_node_module_ships_and_the_shipped_copy_imports_nothing_else(tmp_path):
    node = RUNNER.parent
    assert set(runner.FILES) == {p.name for p in node.glob("*.py") if p.name != "__init__.py"} | {"shipped.txt"}
    for name in runner.FILES:
        (tmp_path / name).write_bytes((node / name).read_bytes())
    # Only the shipped files and the standard library: no site-packages, no PYTHONPATH.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    code = "import runner, attempt, agents; print(sorted(agents.DIALECTS))"
    done = subprocess.run([sys.executable, "-I", "-S", "-c", f"import sys; sys.path.insert(0, {str(tmp_path)!r}); {code}"],
                          capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "claude" in done.stdout
