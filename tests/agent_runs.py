"""One attempt of specfleet's real node runner with a real agent CLI against the scripted model server.

Used by tests/integration/test_agent_clis.py and benchmarks/bench_agent_clis.py. The executor
definitions are the inventory's own (``inventory/shared/executors.yml``), with only the endpoint
moved to the loopback server and the keys replaced by test values; the chain and the job go
through the controller's own code (``executors.chain``, ``executors.runner_chain``).

``as_user``: ``"root"`` starts the runner as root, which hands the workspace to the agent user
and runs the CLI as that user (the local cluster's way); ``"agent"`` starts the runner itself as
the unprivileged agent user (production's way: dispatch logs in as the agent user).
"""
from __future__ import annotations

import json
import os
import pwd
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from specfleet.attempt import executors
from tests.conftest import AGENT_USER, REPO_ROOT, git, make_repo

RUNNER = REPO_ROOT / "specfleet" / "node" / "runner.py"
EXECUTORS = yaml.safe_load((REPO_ROOT / "inventory" / "shared" / "executors.yml").read_text())["specfleet_executors"]
CLI_PATH = "/usr/local/bin:/usr/bin:/bin"
NODE_PYTHON = "/usr/bin/python3"   # a node runs the runner with its own python3, never a venv

REPO = {"calc.py": "def add(a, b):\n    return a - b\n",
        "tests/test_calc.py": "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n",
        "conftest.py": ""}
FIXED = {"calc.py": "def add(a, b):\n    return a + b\n"}
TASK = "S01-fix-add"


def agent_executors() -> list[str]:
    """Every executor of the inventory that runs a real CLI."""
    return [name for name, data in EXECUTORS.items() if data.get("cli")]


def definitions(url_for: dict[str, str], **overrides) -> dict:
    """The inventory's definitions, each executor named in ``url_for`` sent to that server."""
    defs = {}
    for name, data in EXECUTORS.items():
        data = dict(data)
        if name in url_for:
            api = data.get("api") or executors.CLIS[data["cli"]][0]
            data["base_url"] = url_for[name] + ("/v1" if api == "openai" else "")
            data.pop("fallback", None)
        defs[name] = data
    for name, extra in overrides.items():
        defs[name] = dict(defs[name], **extra)
    return defs


@dataclass
class Result:
    status: dict
    seconds: float
    workspace: Path
    run: Path

    @property
    def tries(self) -> list[dict]:
        return [t for r in self.status.get("rounds") or [] for t in r.get("tries") or []]


def run_attempt(root: Path, defs: dict, executor: str, as_user: str = "root", timeout: float = 600) -> Result:
    """Prepare a node folder under ``root`` and run one attempt of ``executor`` (its chain) there."""
    node = root / "node"
    repo = make_repo(root / "repo", REPO)
    mirror = node / "mirrors" / "p.git"
    mirror.parent.mkdir(parents=True)
    subprocess.run(["git", "clone", "-q", "--bare", str(repo), str(mirror)], check=True)
    run = node / "runs" / "p" / TASK / "1-r1"
    run.mkdir(parents=True)
    workspace = node / "workspaces" / "p" / TASK / "1-r1"
    workspace.mkdir(parents=True)
    checked = executors.chain(defs, executor)
    keys = {var: f"test-key-{var}" for data in defs.values() for var in (data.get("env_from_vars") or {}).values()}
    chain, secrets, _notes = executors.runner_chain(checked, 600, keys.get)
    (run / "job.json").write_text(json.dumps({
        "project": "p", "task_id": TASK, "attempt": 1, "run_id": "r1", "mirror": str(mirror),
        "workspace": str(workspace), "branch": f"specfleet/p/{TASK}", "base": git(repo, "rev-parse", "HEAD").strip(),
        "verify": "python3 -m pytest -q", "retries": 0, "modifies": ["calc.py"], "executors": chain,
        "agent_user": AGENT_USER, "heartbeat_s": 5, "attempt_timeout_s": int(timeout)}))
    (run / "secrets.json").write_text(json.dumps(secrets))
    (run / "prompt.md").write_text(f"# specfleet task {TASK}\n\n## Goal\nMake `add` in calc.py add its arguments "
                                   f"(tests/test_calc.py fails now).\n")
    preexec = None
    if as_user == "agent":
        entry = pwd.getpwnam(AGENT_USER)
        subprocess.run(["chown", "-R", f"{entry.pw_uid}:{entry.pw_gid}", str(node)], check=True)

        def preexec() -> None:
            os.setgroups([])
            os.setgid(entry.pw_gid)
            os.setuid(entry.pw_uid)
    started = time.monotonic()
    subprocess.run([NODE_PYTHON, str(RUNNER), "run", str(run)], capture_output=True, timeout=timeout + 60,
                   preexec_fn=preexec, cwd="/", env={"PATH": CLI_PATH, "LANG": "C.UTF-8", "HOME": "/nonexistent"})
    seconds = time.monotonic() - started
    return Result(json.loads((run / "status.json").read_text()), seconds, workspace, run)


def logs(result: Result) -> str:
    """The agent and verify logs of a run, for assertion messages."""
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(result.run.glob("*.log")))
