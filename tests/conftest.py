"""Shared test fixtures: the core on sys.path, real git repositories and spec folders."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
# This checkout's packages for every process the tests start (ansible-playbook, the CLI), also
# when the venv's editable install points at another checkout.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))

from tests.chat_server import chat  # noqa: E402, F401 (a fixture: a chat-completions server on loopback)

AGENT_USER = "specfleet-agent"   # inventory/local: the user agents run as on nodes that log in as root


def passable(path: Path) -> None:
    """Let the agent user pass ``path`` and the test folders above it (search only, never list).

    The local cluster's nodes log in as root, so the runner runs agents and verify as the
    unprivileged agent user, which must reach the workspaces, fake CLIs and scenario files
    the tests keep in pytest's private (0700) temporary folders.
    """
    for folder in (path, *path.parents):
        if folder == Path("/tmp") or folder == folder.parent:
            break
        mode = folder.stat().st_mode
        if not mode & 0o001:
            folder.chmod((mode & 0o7777) | 0o001)


def pytest_configure(config):
    if os.geteuid() != 0:
        return
    original = pytest.TempPathFactory.mktemp

    def mktemp(self, basename: str, numbered: bool = True) -> Path:
        path = original(self, basename, numbered)
        passable(path)
        return path

    pytest.TempPathFactory.mktemp = mktemp


GIT_ENV = {"GIT_AUTHOR_NAME": "specfleet tests", "GIT_AUTHOR_EMAIL": "tests@specfleet.invalid",
           "GIT_COMMITTER_NAME": "specfleet tests", "GIT_COMMITTER_EMAIL": "tests@specfleet.invalid"}


def git(repo: Path, *args: str) -> str:
    result = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                            env=dict(os.environ, **GIT_ENV), check=True)
    return result.stdout


def make_repo(path: Path, files: dict[str, str], branch: str = "main") -> Path:
    """A real git repository with ``files`` committed on ``branch``."""
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", branch)
    for name, content in files.items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "initial")
    return path


def spec_text(task_id: str | None = "S01", *, body: str | None = None, **fields: object) -> str:
    """A spec file; ``fields`` go to the front matter as YAML (lists in flow style)."""
    front: dict[str, object] = {}
    if task_id is not None:
        front["task_id"] = task_id
    front.setdefault("modifies", ["src/app.py"])
    front.update(fields)
    front = {k: v for k, v in front.items() if v is not None}
    if body is None:
        body = "## Goal\nDo the thing.\n\n## Acceptance criteria\n- [ ] `pytest -q` passes\n"
    # One key per line, values as JSON (which is YAML), so line numbers are predictable.
    lines = "".join(f"{key}: {json.dumps(value, ensure_ascii=False)}\n" for key, value in front.items())
    return "---\n" + lines + "---\n" + textwrap.dedent(body)


class ProjectFactory:
    """Writes ``specs/<project>/`` and its repository under a tmp dir."""

    def __init__(self, root: Path):
        self.root = root
        self.specs_root = root / "specs"
        self.repo = make_repo(root / "repo", {
            "src/app.py": "print('app')\n", "src/util.py": "\n", "tests/test_app.py": "def test_x():\n    pass\n",
            "README.md": "# demo\n"})

    def project(self, name: str = "demo", config: str | None = None, **specs: str) -> Path:
        folder = self.specs_root / name
        folder.mkdir(parents=True, exist_ok=True)
        if config is None:
            config = f"repository: {self.repo}\nbase_branch: main\nverify: pytest -q\n"
        (folder / "project.yml").write_text(config)
        for filename, text in specs.items():
            (folder / filename).write_text(text)
        return folder


@pytest.fixture
def projects(tmp_path: Path) -> ProjectFactory:
    return ProjectFactory(tmp_path)
