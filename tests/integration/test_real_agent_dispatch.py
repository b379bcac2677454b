"""The README's main job with a real agent: the example project dispatched to Claude Code.

Real ansible-playbook, real sshd nodes, real git, the pinned Claude Code CLI run by the node
runner as the unprivileged agent user; only the model is scripted. For each spec the model
writes, through Claude Code's own tools, the change of the spec's recorded session, computed
against what the workspace holds when it asks (specs run in dependency order, some on files
another spec changed). All eight specs must merge, and the tokens the model reported must
reach the store and ``specfleet status``.
"""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

import yaml

from tests.agent_runs import EXECUTORS
from tests.conftest import REPO_ROOT
from tests.modelserver import ModelServer, Plan

RECORDINGS = REPO_ROOT / "specs" / "clawmarketing" / "recordings"


def recorded_change(patch: Path):
    """A plan's edits: the recorded patch applied to a copy of the workspace as it is now.

    git runs as the workspace's owner (the agent user): root's git refuses a repository
    another user owns, and should.
    """
    def edits(workspace: str) -> dict[str, str]:
        owner = os.stat(workspace)
        with tempfile.TemporaryDirectory() as scratch:
            os.chown(scratch, owner.st_uid, owner.st_gid)
            copy = Path(scratch) / "ws"

            def as_owner(*args: str) -> str:
                return subprocess.run(args, check=True, capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"},
                                      preexec_fn=lambda: (os.setgid(owner.st_gid), os.setuid(owner.st_uid))).stdout

            as_owner("git", "clone", "-q", "--shared", workspace, str(copy))
            as_owner("git", "-C", str(copy), "apply", "--3way", "--whitespace=nowarn", str(patch))
            changed = as_owner("git", "-C", str(copy), "status", "--porcelain", "--no-renames", "-uall").splitlines()
            return {line[3:]: (copy / line[3:]).read_text() for line in changed if (copy / line[3:]).is_file()}
    return edits


def test_dispatch_of_the_example_with_claude_code_merges_every_spec(fleet, tmp_path):
    plans = {f"# specfleet task {p.stem}\n": Plan(edits=recorded_change(p), input_tokens=2000, output_tokens=400)
             for p in sorted(RECORDINGS.glob("*.patch"))}
    assert len(plans) == 8
    with ModelServer(plans=plans, default=Plan(reply="No change is needed.")) as server:
        claude = dict(EXECUTORS["claude"], base_url=server.url)
        extra = tmp_path / "vars.yml"
        extra.write_text(yaml.safe_dump({"specfleet_executors": dict(EXECUTORS, claude=claude),
                                         "vault_anthropic_api_key": "test-key-not-a-real-one"}))
        booted = fleet.playbook("bootstrap.yml", "-e", f"@{extra}", timeout=600)
        assert booted.returncode == 0, booted.output[-4000:]
        run = fleet.playbook("dispatch.yml", "-e", "project=clawmarketing", "-e", "specfleet_executor=claude",
                             "-e", f"@{extra}", timeout=1200)
        assert run.returncode == 0, "\n".join(server.errors[:2]) + run.output[-6000:]
    assert "clawmarketing: 8 specs in this run: 8 merged" in run.output
    # Only the inventory's model was asked for, by Claude Code, with the key of the vault variable.
    bodies = [r for r in server.requests if r["method"] == "POST"]
    assert bodies and {r["body"].get("model") for r in bodies} == {claude["model"]}
    keys = {next((v for k, v in r["headers"].items() if k.lower() == "x-api-key"), None) for r in bodies}
    assert keys == {"test-key-not-a-real-one"}
    # Usage reached the store and status: every merged attempt was claude's, with tokens.
    status = subprocess.run([str(Path(fleet.env["PATH"].split(":")[0]) / "specfleet"), "status", "clawmarketing",
                             "--json"], env=fleet.env, capture_output=True, text=True, cwd=REPO_ROOT)
    assert status.returncode == 0, status.stderr
    usage = json.loads(status.stdout)["usage"]["clawmarketing"]
    by_executor = {row["executor"]: row for row in usage["by_executor"]}
    assert set(by_executor) == {"claude"} and by_executor["claude"]["attempts"] >= 8
    assert by_executor["claude"]["input_tokens"] >= 8 * 2000 and by_executor["claude"]["output_tokens"] >= 8 * 400
