# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A project: ``specs/<project>/project.yml`` and the repository it points at."""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from specfleet.model import frontmatter
from specfleet.model.durations import parse_duration
from specfleet.model.problems import Problem
from specfleet.model.settings import expand_path
from specfleet.model.spec import TASK_ID
from specfleet.node.paths import normalise_modifies

from .schema import load_schema, schema_problems

PROJECT_NAME = TASK_ID
_REMOTE = re.compile(r"^(?:[a-z][a-z0-9+.-]*://|[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:)")


@dataclass(frozen=True)
class ProjectConfig:
    name: str
    folder: Path
    repository: str
    base_branch: str = "main"
    verify: str | None = None
    test_command: str | None = None
    executor: str | None = None
    priority: int | None = None
    estimate: Any = None
    timeout: Any = None
    retries: int | None = None
    context_files: tuple[str, ...] = ("CLAUDE.md", "SHARED_CONTEXT.md")
    ignore: tuple[str, ...] = ()
    description: str = ""
    transport: str = "bundle"
    test_paths: tuple[str, ...] = ()
    verify_timeout: Any = "20m"
    require_tests: bool = True
    exclude: tuple[str, ...] = ()
    merge_batch: int = 8
    promote: str = "review"
    push: str | None = None
    review: str = "off"
    test_timeout: Any = "30m"
    network: bool = False
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def is_remote(self) -> bool:
        return bool(_REMOTE.match(self.repository))

    @property
    def config_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.raw, sort_keys=True, default=str).encode()).hexdigest()

    def spec_defaults(self) -> dict[str, Any]:
        return {"verify": self.verify, "executor": self.executor, "priority": self.priority,
                "estimate": self.estimate, "timeout": self.timeout, "retries": self.retries}


def load_project(folder: Path, name: str, display: str,
                 env: dict[str, str] | None = None) -> tuple[ProjectConfig | None, list[Problem]]:
    """Read and check ``project.yml`` in ``folder``; ``display`` is its path for messages.

    The checks run in order and stop at the first group that fails: the file is readable
    YAML; unknown keys (reported, then dropped) and the schema; the repository and branch
    names; then the values the schema cannot judge (paths, durations, transport).
    """
    path = folder / "project.yml"
    if not path.is_file():
        return None, [Problem(display, None, None, "is missing",
                              "create it with at least 'repository: <path or URL of the git repository>'")]
    try:
        data, key_lines = frontmatter.load_yaml_mapping(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        return None, [Problem(display, None, None, "is not UTF-8 text")]
    except frontmatter.FrontMatterError as exc:
        return None, [Problem(display, exc.line, exc.key, str(exc))]
    problems = _unknown_settings(data, key_lines, display)
    invalid = schema_problems(load_schema("project"), data, display, key_lines.get)
    if invalid:
        return None, problems + invalid
    repository, invalid = _repository(data, key_lines, display, folder, env)
    if invalid:
        return None, invalid
    invalid = _values(data, key_lines, display, repository)
    if invalid:
        return None, problems + invalid
    return _config(name, folder, repository, data), problems


def _unknown_settings(data: dict, key_lines: dict, display: str) -> list[Problem]:
    """One problem per key the schema does not know; the key is dropped from ``data``."""
    known = load_schema("project")["properties"]
    problems = []
    for key in [k for k in data if k not in known]:
        problems.append(Problem(display, key_lines.get(str(key)), str(key), "is not a project setting",
                                "known settings: " + ", ".join(sorted(known))))
        del data[key]
    return problems


def _repository(data: dict, key_lines: dict, display: str, folder: Path,
                env: dict[str, str] | None) -> tuple[str, list[Problem]]:
    """The repository as a URL or an absolute path, after the checks of it and of the branch names."""
    repository = data["repository"]
    if any(ord(c) < 32 for c in repository) or repository.startswith("-"):
        return repository, [Problem(display, key_lines.get("repository"), "repository",
                                    "contains control characters or starts with '-'")]
    # The schema's patterns end in '$', which Python's re also lets match before a final line break.
    for key in ("base_branch", "push"):
        if any(ord(c) < 32 for c in str(data.get(key, ""))):
            return repository, [Problem(display, key_lines.get(key), key, "contains a line break or control character",
                                        "write the name alone, e.g. main")]
    if _REMOTE.match(repository):
        return repository, []
    try:
        repository = expand_path(repository, env)
    except ValueError as exc:
        return repository, [Problem(display, key_lines.get("repository"), "repository", str(exc),
                                    "export the variable or write the path out")]
    if not os.path.isabs(repository):
        repository = str((folder / repository).resolve())
    return repository, []


def _values(data: dict, key_lines: dict, display: str, repository: str) -> list[Problem]:
    """What the schema cannot judge: test paths, durations, and a transport that fits the repository."""
    problems = []
    for raw in data.get("test_paths", []):
        try:
            normalise_modifies(raw)
        except ValueError as exc:
            problems.append(Problem(display, key_lines.get("test_paths"), "test_paths", f"entry {raw!r} {exc}"))
    for key, default in (("verify_timeout", "20m"), ("test_timeout", "30m")):
        try:
            parse_duration(data.get(key, default))
        except ValueError as exc:
            problems.append(Problem(display, key_lines.get(key), key, str(exc)))
    if data.get("transport", "bundle") == "bundle" and _REMOTE.match(repository):
        problems.append(Problem(display, key_lines.get("transport"), "transport",
                                "is bundle (the default), which needs a local repository, but repository is a URL",
                                "set 'transport: remote' or point repository at a local clone"))
    return problems


def _config(name: str, folder: Path, repository: str, data: dict) -> ProjectConfig:
    """The checked settings, with their defaults."""
    return ProjectConfig(
        name=name, folder=folder, repository=repository,
        base_branch=data.get("base_branch", "main"), verify=data.get("verify"),
        test_command=data.get("test_command"), executor=data.get("executor"),
        priority=data.get("priority"), estimate=data.get("estimate"), timeout=data.get("timeout"),
        retries=data.get("retries"),
        context_files=tuple(data.get("context_files", ProjectConfig.context_files)),
        ignore=tuple(data.get("ignore", ())), description=data.get("description", ""), raw=dict(data),
        transport=data.get("transport", "bundle"), test_paths=tuple(data.get("test_paths", ())),
        verify_timeout=data.get("verify_timeout", "20m"), require_tests=data.get("require_tests", True),
        exclude=tuple(data.get("exclude", ())), merge_batch=data.get("merge_batch", 8),
        promote=data.get("promote", "review"), push=data.get("push"), review=data.get("review", "off"),
        test_timeout=data.get("test_timeout", "30m"), network=data.get("network", False),
    )


class RepositoryError(Exception):
    pass


def git_process(repository: str, *args: str, timeout: float | None = 60) -> subprocess.CompletedProcess:
    """The controller's one git runner: ``git -C repository args``, no prompts, C locale, output captured.

    Every controller-side git call goes through here (:func:`run_git` for output,
    :func:`git_succeeds` for a yes/no question, this for a caller that reads git's stderr
    itself). The node runner has its own: it cannot import the controller.
    """
    try:
        return subprocess.run(["git", "-C", repository, *args], capture_output=True, text=True, timeout=timeout,
                              check=False, env=dict(os.environ, GIT_TERMINAL_PROMPT="0", LC_ALL="C"))
    except FileNotFoundError as exc:
        raise RepositoryError("git is not installed") from exc


def run_git(repository: str, *args: str, check: bool = True, timeout: float = 60) -> str:
    """``git -C repository args`` (no prompts, C locale); stdout, or :class:`RepositoryError` with git's last word."""
    result = git_process(repository, *args, timeout=timeout)
    if check and result.returncode != 0:
        raise RepositoryError(result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "git failed")
    return result.stdout


def git_succeeds(repository: str, *args: str, timeout: float = 60) -> bool:
    """Whether ``git -C repository args`` exits 0 (``cat-file -e``, ``merge-base --is-ancestor``)."""
    return git_process(repository, *args, timeout=timeout).returncode == 0


def repository_files(repository: str, branch: str) -> set[str]:
    """Tracked files on ``branch`` of a local repository (bare or not), as agents will see them.

    The committed tree is what a worktree starts from; files only in someone's working
    copy do not exist for a spec.
    """
    if not os.path.isdir(repository):
        raise RepositoryError(f"{repository} does not exist or is not a directory")
    git_dir = run_git(repository, "rev-parse", "--absolute-git-dir").strip()
    real = os.path.realpath(repository)
    if os.path.realpath(git_dir) not in (real, os.path.join(real, ".git")):
        raise RepositoryError(f"{repository} is not the top of a git repository")
    try:
        run_git(repository, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}^{{commit}}")
    except RepositoryError as exc:
        raise RepositoryError(f"branch {branch!r} does not exist in {repository}") from exc
    listing = run_git(repository, "ls-tree", "-r", "-z", "--name-only", f"refs/heads/{branch}")
    return {name for name in listing.split("\x00") if name}
