# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The repository landing works in, and its branches: read a tip, move one only by compare-and-swap."""
from __future__ import annotations

import os

from specfleet.attempt.workspace import git
from specfleet.model.project import ProjectConfig
from specfleet.model.settings import specfleet_home
from specfleet.store.base import StoreError


class LandingError(StoreError):
    """The stage cannot do its work (repository missing, branch moved, dirty checkout...)."""


def local_repository(config: ProjectConfig) -> str:
    """The repository to work in: the project's own, or for a URL a mirror refreshed from it."""
    if not config.is_remote:
        if not os.path.isdir(config.repository):
            raise LandingError(f"project {config.name}: repository {config.repository} does not exist")
        return config.repository
    mirror = specfleet_home() / "landing" / f"{config.name}.git"
    if (mirror / "HEAD").exists():
        git(str(mirror), "fetch", "-q", "--prune", "origin")
    else:
        mirror.parent.mkdir(parents=True, exist_ok=True)
        git(str(mirror.parent), "clone", "-q", "--mirror", config.repository, str(mirror))
    return str(mirror)


def publish_branch(config: ProjectConfig, repository: str, branch: str, new: str, old: str | None) -> None:
    """Move ``branch`` (compare-and-swap) and, for a URL project, push it there the same way."""
    move_branch(repository, branch, new, old)
    if config.is_remote:
        git(repository, "push", "-q", f"--force-with-lease=refs/heads/{branch}:{old or ''}", "origin",
            f"{new}:refs/heads/{branch}")


def tip(repository: str, branch: str) -> str | None:
    out = git(repository, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}^{{commit}}", check=False).strip()
    return out or None


def move_branch(repository: str, branch: str, new: str, old: str | None) -> None:
    """Compare-and-swap ``branch`` from ``old`` (None: must not exist) to ``new``."""
    git(repository, "update-ref", "-m", "specfleet", f"refs/heads/{branch}", new, old or "0" * 40)
