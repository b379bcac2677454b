"""Every executor of the inventory with its real, pinned CLI, through specfleet's real node runner.

The only stand-in is the paid model: a scripted server on loopback that speaks each provider's
API (tests/modelserver). The CLIs are the pinned ones scripts/setup.sh installs (as bootstrap does
on a node); a missing CLI fails these tests, it never skips them.

For each executor, as root (the runner hands the workspace to the agent user) and as the agent
user itself: the CLI edits through its own tools, the runner commits, verify passes, the gates
pass, and the attempt records the model the inventory names and the tokens the server reported.
For each CLI: a 429 from the model moves the attempt to the next executor of the chain within
about a minute, and the attempt says which executor answered and why the first did not.
"""
from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.agent_runs import EXECUTORS, FIXED, agent_executors, definitions, logs, run_attempt
from tests.modelserver import ModelServer, Plan

CLIS = sorted({data["cli"] for data in EXECUTORS.values() if data.get("cli")})


def test_every_pinned_cli_is_installed():
    missing = [cli for cli in CLIS if not shutil.which(cli, path="/usr/local/bin:/usr/bin:/bin")]
    assert not missing, f"not installed: {missing} (scripts/setup.sh installs the pinned CLIs)"


def asked_models(server: ModelServer) -> set[str]:
    """The model each request asked for (in the body, or in Gemini's path)."""
    found = set()
    for request in server.requests:
        body = request["body"] if isinstance(request["body"], dict) else {}
        if body.get("model"):
            found.add(str(body["model"]).split("/")[-1])
        elif "/models/" in request["path"] and ":" in request["path"]:
            found.add(request["path"].split("/models/")[1].split(":")[0])
    return found


@pytest.mark.parametrize("as_user", ["root", "agent"])
@pytest.mark.parametrize("executor", agent_executors())
def test_the_executor_edits_commits_and_passes_verify_with_its_real_cli(tmp_path, executor, as_user):
    with ModelServer(default=Plan(edits=FIXED, input_tokens=1500, output_tokens=250)) as server:
        result = run_attempt(tmp_path, definitions({executor: server.url}), executor, as_user)
    status = result.status
    context = (status, [r["path"] for r in server.requests], logs(result))
    assert status["state"] == "succeeded", context
    # The CLI's own edit, committed on the spec's branch; nothing else in the change.
    assert (result.workspace / "calc.py").read_text() == FIXED["calc.py"]
    assert status["files_changed"] == ["calc.py"], context
    subject = subprocess.run(["git", "-c", "safe.directory=*", "-C", str(result.workspace), "log", "-1", "--format=%s"],
                             capture_output=True, text=True, check=True).stdout
    assert subject.startswith("specfleet(p): S01-fix-add") and (result.run / "result.bundle").is_file()
    rounds = status["rounds"]
    assert rounds[0]["gates"] == {"diff": True, "stubs": True, "scope": True, "tests_kept": True, "tests_ran": True,
                                  "secrets": True} and rounds[0]["verify_exit"] == 0, context
    # Only the model the inventory names was asked for, and the attempt records it with its tokens.
    model = EXECUTORS[executor]["model"]
    assert asked_models(server) == {model}, ([r["body"] for r in server.requests], context)
    assert status["usage"]["models"] == [model], context
    assert status["usage"]["input_tokens"] >= 1500 and status["usage"]["output_tokens"] >= 250, context
    assert status["agent_user"] == "specfleet-agent", context
    # The agent ran as the agent user: the files it wrote are that user's.
    owner = subprocess.run(["stat", "-c", "%U", str(result.workspace / "calc.py")], capture_output=True, text=True)
    assert owner.stdout.strip() == "specfleet-agent"


@pytest.mark.parametrize("cli", CLIS)
def test_a_rate_limit_moves_to_the_next_executor_within_a_minute(tmp_path, cli):
    first = next(name for name in agent_executors() if EXECUTORS[name]["cli"] == cli)
    backup = "claude" if cli != "claude" else "codex"
    with ModelServer(default=Plan(rate_limit=True)) as limited, ModelServer(default=Plan(edits=FIXED)) as working:
        defs = definitions({first: limited.url, backup: working.url})
        defs[first] = dict(defs[first], fallback=backup, backoff="1s")
        result = run_attempt(tmp_path, defs, first, "root")
    status = result.status
    assert status["state"] == "succeeded", (status.get("error"), logs(result))
    tries = result.tries
    assert [t["executor"] for t in tries] == [first, backup]
    assert tries[0]["rate_limited"] is True and tries[1]["rate_limited"] is False, tries
    assert tries[0]["error"], tries[0]          # why the first did not answer, in the CLI's own words
    assert status["rounds"][0]["executor"] == backup and status["executor"] == backup
    # The CLI gave up by itself: its own retries are bounded (it was neither stopped nor timed out;
    # how long that takes per CLI is measured by benchmarks/bench_agent_clis.py, not asserted here).
    assert not tries[0]["timed_out"] and "stopped:" not in (result.run / tries[0]["log"]).read_text(), tries[0]
    assert limited.requests and working.requests


@pytest.mark.parametrize("cli", ["codex", "opencode"])
def test_a_cli_waiting_out_a_long_retry_after_is_stopped_once_it_reports_the_rate_limit(tmp_path, cli):
    # Codex and OpenCode wait out whatever Retry-After says; the runner reads their own retry
    # reports while they run and stops them rate_limit_grace later, then the chain moves on.
    first = next(name for name in agent_executors() if EXECUTORS[name]["cli"] == cli)
    with ModelServer(default=Plan(rate_limit=True), retry_after=600) as limited, \
            ModelServer(default=Plan(edits=FIXED)) as working:
        defs = definitions({first: limited.url, "claude": working.url})
        defs[first] = dict(defs[first], fallback="claude", backoff="1s", rate_limit_grace="2s")
        result = run_attempt(tmp_path, defs, first, "root")
    tries = result.tries
    assert [t["executor"] for t in tries] == [first, "claude"], (tries, logs(result))
    assert tries[0]["rate_limited"] and not tries[0]["timed_out"], tries[0]
    assert "stopped: still retrying a rate limit" in (result.run / tries[0]["log"]).read_text()
    assert result.status["state"] == "succeeded"
