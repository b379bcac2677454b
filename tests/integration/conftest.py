"""Integration fixtures: real ansible-playbook runs against real sshd nodes on loopback."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tools import example_repo
from tools.localcluster import LocalCluster, NodeSpec, free_port

GROUP_VARS = REPO_ROOT / "inventory" / "local" / "group_vars"
VENV_BIN = Path(sys.executable).parent


@dataclass
class Run:
    returncode: int
    output: str


@dataclass
class Controller:
    """A controller environment: its own SPECFLEET_HOME, database and (optional) cluster."""

    home: Path
    env: dict[str, str]

    @property
    def db(self) -> Path:
        return self.home / "state.db"

    def playbook(self, *args: str, timeout: int = 300) -> Run:
        result = subprocess.run([str(VENV_BIN / "ansible-playbook"), *args], cwd=REPO_ROOT, env=self.env,
                                capture_output=True, text=True, timeout=timeout, check=False)
        return Run(result.returncode, result.stdout + result.stderr)


def controller_env(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "SPECFLEET_"))}
    env.update(PATH=f"{VENV_BIN}:{env.get('PATH', '/usr/bin:/bin')}", SPECFLEET_HOME=str(home),
               ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", ANSIBLE_LOCAL_TEMP=str(home / "ansible-tmp"),
               ANSIBLE_HOME=str(home / "ansible-home"))
    env.update(extra or {})
    return env


@pytest.fixture
def controller(tmp_path: Path) -> Controller:
    """No nodes: enough for validate.yml, which only runs on the controller."""
    home = tmp_path / "home"
    example_repo.create(dest=home / "repos" / "clawmarketing")
    return Controller(home, controller_env(home))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    """Three real SSH worker nodes, shared by the tests of one module."""
    root = tmp_path_factory.mktemp("cluster")
    nodes = [NodeSpec(f"node-{i}", f"127.0.0.{30 + i}", free_port(f"127.0.0.{30 + i}"), 4) for i in (1, 2, 3)]
    with LocalCluster(root / "c", nodes) as started:
        started.start()
        yield started


@pytest.fixture
def fleet(cluster: LocalCluster, tmp_path: Path) -> Controller:
    """A controller with its own home and database, using the module's cluster."""
    home = tmp_path / "home"
    example_repo.create(dest=home / "repos" / "clawmarketing")
    inventory = cluster.write_inventory(tmp_path / "inventory" / "hosts.yml", group_vars_dir=GROUP_VARS)
    return Controller(home, controller_env(home, cluster.ansible_env(inventory)))
