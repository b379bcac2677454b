# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Scratch clones: where landing checks out, merges and tests, never in the user's working tree.

A scratch clone shares the repository's objects (``git clone --shared``), so it costs a
checkout, not a copy; it lives under ``$SPECFLEET_HOME/scratch`` named after the process
that made it, so the next process removes the ones a killed controller left.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from specfleet.attempt.workspace import git
from specfleet.land.repository import LandingError, publish_branch
from specfleet.model.project import ProjectConfig
from specfleet.model.settings import specfleet_home


class Scratch:
    """A throw-away clone (objects shared with the repository) to check out, merge and test in."""

    def __init__(self, repository: str, project: str):
        base = specfleet_home() / "scratch"
        base.mkdir(parents=True, exist_ok=True)
        _remove_orphans(base)
        self.repository = repository
        self.path = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-{project}-", dir=base))
        git(str(self.path), "clone", "-q", "--shared", "--no-checkout", repository, ".")
        for key, value in (("user.name", "specfleet"), ("user.email", "specfleet@localhost"),
                           ("commit.gpgsign", "false"), ("core.hooksPath", "/dev/null")):
            git(str(self.path), "config", key, value)

    def git(self, *args: str, check: bool = True) -> str:
        return git(str(self.path), *args, check=check)

    def checkout(self, commit: str) -> None:
        self.git("checkout", "-q", "--force", "--detach", commit)
        self.git("clean", "-q", "-ffdx")

    def require(self, commit: str) -> None:
        """``commit`` must exist (the clone shares the repository's objects, new ones included)."""
        if subprocess.run(["git", "-C", str(self.path), "cat-file", "-e", f"{commit}^{{commit}}"],
                          capture_output=True).returncode != 0:
            raise LandingError(f"commit {commit} is not in {self.repository}: was the branch deleted?")

    def merge(self, commit: str, message: str) -> list[str] | None:
        """Merge ``commit`` into the checked-out commit; None, or the conflicting files (merge aborted)."""
        result = subprocess.run(["git", "-C", str(self.path), "merge", "--no-ff", "--no-edit", "-q", "-m", message,
                                 commit], capture_output=True, text=True, env=dict(os.environ, LC_ALL="C"))
        if result.returncode == 0:
            return None
        files = self.git("diff", "--name-only", "--diff-filter=U", check=False).split()
        self.git("merge", "--abort", check=False)
        self.git("reset", "-q", "--hard", check=False)
        return files or [f"(git merge failed: {(result.stderr or result.stdout).strip()[-200:]})"]

    def head(self) -> str:
        return self.git("rev-parse", "HEAD").strip()

    def publish(self, commit: str, ref: str) -> None:
        """Copy ``commit`` (made here) into the repository under ``ref``."""
        self.git("update-ref", "refs/specfleet/out", commit)
        git(self.repository, "fetch", "-q", "--no-tags", str(self.path), f"+refs/specfleet/out:{ref}")

    def close(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def _remove_orphans(base: Path) -> None:
    """Scratch clones whose process died (a killed controller) are removed by the next one."""
    for entry in base.iterdir():
        pid = entry.name.split("-", 1)[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(entry, ignore_errors=True)


@contextmanager
def scratch(repository: str, project: str) -> Iterator[Scratch]:
    work = Scratch(repository, project)
    try:
        yield work
    finally:
        work.close()


def publish_tested(work: Scratch, config: ProjectConfig, branch: str, commit: str, old: str | None) -> None:
    """Move ``branch`` of the repository from ``old`` to ``commit``, tested in ``work``.

    The commit reaches the repository under a temporary ref first, so the branch moves
    (compare-and-swap) to an object the repository already holds; that ref is removed after.
    """
    landing_ref = f"refs/specfleet/{config.name}/landing"
    work.publish(commit, landing_ref)
    publish_branch(config, work.repository, branch, commit, old)
    git(work.repository, "update-ref", "-d", landing_ref, check=False)
