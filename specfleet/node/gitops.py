# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""git on the node: the workspace's clone, its hand-over to the agent user, the round's diff, the push.

The runner's own git runner (the node cannot import the controller's). Once the agent user
owns the workspace, git runs as that user with hooks, fsmonitor and attributes switched off.
"""
from __future__ import annotations

import os
import re
import stat
import subprocess

try:  # inside the controller's package
    from .gates import Change, added_lines, parse_name_status
    from .runfiles import InfrastructureError, RunnerError, tail, write_atomic
except ImportError:  # copied next to this file on a node
    from gates import Change, added_lines, parse_name_status  # type: ignore[no-redef]
    from runfiles import InfrastructureError, RunnerError, tail, write_atomic  # type: ignore[no-redef]

DEFAULT_EXCLUDES = ("__pycache__/", "*.pyc", ".pytest_cache/", ".mypy_cache/", ".ruff_cache/", "node_modules/",
                    ".venv/", ".tox/", "*.egg-info/", ".coverage", "coverage/", "dist/", "build/")


def stat_is_file(info: os.stat_result) -> bool:
    return stat.S_ISREG(info.st_mode)


class WorkspaceGit:
    """The git half of :class:`attempt.Attempt` (uses its ``job``, ``agent``, ``workspace``, ``save``, ``redact``)."""

    start_commit: str | None

    def git(self, *args: str, cwd: str | None = None, check: bool = True, input_text: str | None = None,
            binary: bool = False, as_agent: bool = True):
        """git in the workspace; once the agent user owns it, git runs as that user.

        A workspace the agent wrote may hold a ``.git/config`` with commands (fsmonitor,
        filters, hooks): never run those as root. ``as_agent=False`` is for the root-side
        clone before the agent owns anything.
        """
        identity = self.job.get("identity") or {}
        cmd = ["git", "-c", "core.quotePath=false", "-c", "core.attributesFile=/dev/null", "-c", "diff.noprefix=false",
               "-c", "diff.mnemonicPrefix=false", "-c", f"user.name={identity.get('name', 'specfleet')}",
               "-c", f"user.email={identity.get('email', 'specfleet@localhost')}", "-c", "core.hooksPath=/dev/null",
               "-c", "commit.gpgsign=false", "-c", "core.fsmonitor=false", *args]
        env = self.git_env() if as_agent else dict(os.environ, GIT_TERMINAL_PROMPT="0", LC_ALL="C")
        result = subprocess.run(cmd, cwd=cwd or self.workspace, capture_output=True, text=not binary,
                                input=input_text, env=env, check=False,
                                preexec_fn=self.agent.preexec() if as_agent else None)
        if check and result.returncode != 0:
            stderr = result.stderr if not binary else result.stderr.decode("utf-8", "replace")
            raise RunnerError(f"git {' '.join(args[:3])} failed: {tail(stderr.strip(), 5)}")
        return result.stdout

    def git_env(self) -> dict:
        """git's environment as the agent user: a HOME of its own (git dies on an unreadable ~/.gitconfig)."""
        if not self.agent.switch:
            return dict(os.environ, GIT_TERMINAL_PROMPT="0", LC_ALL="C")
        return dict(self.clean_env(self.path("git-home")), GIT_TERMINAL_PROMPT="0", LC_ALL="C", GIT_CONFIG_NOSYSTEM="1")

    def prepare(self) -> None:
        """A fresh clone sharing the mirror's objects, on the spec's branch, dependencies merged."""
        self.save(phase="workspace")
        job = self.job
        mirror = os.path.expanduser(job["mirror"])
        if job.get("remote_url"):
            fetched = subprocess.run(["flock", mirror + ".lock", "git", "--git-dir", mirror, "fetch", "-q", "--no-tags",
                                      job["remote_url"], *[f"+{ref}:{ref}" for ref in job.get("remote_refs", [])]],
                                     capture_output=True, text=True, timeout=600,
                                     env=dict(os.environ, GIT_TERMINAL_PROMPT="0"))
            if fetched.returncode != 0:
                raise RunnerError(f"could not fetch {job['remote_url']} into {mirror}: {tail(fetched.stderr, 5)}")
        if os.path.isdir(os.path.join(self.workspace, ".git")):
            raise RunnerError(f"workspace {self.workspace} already exists: an attempt never reuses one")
        os.makedirs(self.workspace, exist_ok=True)
        if os.listdir(self.workspace):
            raise RunnerError(f"workspace {self.workspace} is not empty")
        # Switching to the agent user: the clone stops borrowing the mirror's objects, so the
        # agent needs nothing of the node's but its own workspace.
        self.git("clone", "-q", "--shared", *(["--dissociate"] if self.agent.switch else []), "--no-checkout", mirror,
                 self.workspace, cwd=self.run_dir, as_agent=False)
        try:
            self.git("checkout", "-q", "-b", job["branch"], job["base"], as_agent=False)
        except RunnerError as exc:
            if re.search(r"reference is not a tree|not a valid object|bad object|unable to read", str(exc)):
                raise InfrastructureError(f"the node's mirror {mirror} lacks the start commit {job['base'][:12]}: "
                                          f"{exc}") from None
            raise
        excludes = list(DEFAULT_EXCLUDES) + list(job.get("exclude", []))
        with open(os.path.join(self.workspace, ".git", "info", "exclude"), "a", encoding="utf-8") as handle:
            handle.write("\n".join(excludes) + "\n")
        self.hand_over(os.path.commonpath([mirror, self.workspace]))
        # The base is the integration tip, which holds the spec's merged dependencies.
        self.start_commit = self.git("rev-parse", "HEAD").strip()
        self.save(base=job["base"], start_commit=self.start_commit, workspace=self.workspace, branch=job["branch"])

    def hand_over(self, work_root: str) -> None:
        """Give the workspace to the agent user and let it pass the work root's own folders to it.

        Folders between the work root and the workspace or run directory get search
        permission only (0711: no listing); the run directory's files stay the runner's.
        Above the work root nothing is changed: bootstrap grants the agent user search
        permission there (an ACL) when the login user is another user.
        """
        if not self.agent.switch:
            return
        self.agent.own(self.workspace)
        for target in (os.path.dirname(self.workspace), self.run_dir):
            folder = target
            while folder.startswith(work_root.rstrip("/") + "/") or folder == work_root:
                info = os.stat(folder)
                if info.st_uid == os.geteuid() and not info.st_mode & 0o001:
                    os.chmod(folder, (info.st_mode & 0o7777) | 0o111)
                if folder == work_root:
                    break
                folder = os.path.dirname(folder)
        blocked = self.agent.can_reach(self.workspace) or self.agent.can_reach(self.run_dir)
        if blocked:
            raise InfrastructureError(
                f"the agent user {self.agent.name} cannot pass {blocked} on the way to its workspace (run "
                f"bootstrap.yml for this node: it grants {self.agent.name} search permission on the work root's "
                f"parent folders)")

    def diff(self) -> tuple[list[Change], dict[str, list[tuple[int, str]]], list[str]]:
        """Stage everything; -> changes, added lines, and the names of secrets found in the diff."""
        # An agent that committed on its own: its commits are folded into the one final commit.
        self.git("reset", "-q", "--soft", self.start_commit)
        self.git("add", "-A")
        changes = parse_name_status(self.git("diff", "--cached", "--name-status", "-z", "-M", self.start_commit))
        added = added_lines(self.git("diff", "--cached", "-U0", "--no-color", "--no-ext-diff", "--no-textconv", "--text",
                                     "--src-prefix=a/", "--dst-prefix=b/", self.start_commit))
        patch = self.git("diff", "--cached", "--binary", "--no-textconv", self.start_commit)
        leaked = [f"{executor}:{name}" for executor, env in self.secrets.items() for name, value in env.items()
                  if len(value) >= 4 and value in patch]
        write_atomic(self.path("changes.patch"), self.redact(patch), 0o644)
        if leaked:
            self.scrub(changes)
        return changes, added, leaked

    def scrub(self, changes: list[Change]) -> None:
        """Replace secret values in the changed files with ``***`` and drop every git object that held them.

        The secrets gate fails the round either way; this keeps the key out of the workspace,
        which stays on the node for the next round and for inspection.
        """
        for change in changes:
            path = os.path.join(self.workspace, change.path)
            # The agent owns these files: never follow a link it may have put there.
            try:
                fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK)
            except OSError:
                continue
            with os.fdopen(fd, "r+b") as handle:
                if not stat_is_file(os.fstat(fd)):
                    continue
                data = handle.read()
                clean = self.redact.bytes(data)
                if clean != data:
                    handle.seek(0)
                    handle.write(clean)
                    handle.truncate()
        self.git("add", "-A")
        self.git("reflog", "expire", "--expire=now", "--all")
        self.git("prune", "--expire=now")

    def push(self, bundle: str, commit: str) -> None:
        """Push the result from the node's mirror, never from the workspace.

        The workspace's ``.git/config`` is the agent's to write (an ``sshCommand``, an
        ``insteadOf``, a credential helper): the runner's credentials only ever meet the
        mirror, which the agent cannot touch. The bundle's prerequisite (the base) is there.
        """
        job = self.job
        mirror = os.path.expanduser(job["mirror"])
        ref = f"refs/specfleet-results/{job['run_id']}/{job['attempt']}"
        env = dict(os.environ, GIT_TERMINAL_PROMPT="0")
        steps = [["flock", mirror + ".lock", "git", "--git-dir", mirror, "fetch", "-q", "--no-tags", bundle,
                  f"+refs/heads/{job['branch']}:{ref}"],
                 ["git", "--git-dir", mirror, "push", "-q", "--force", job["remote_url"],
                  f"{commit}:refs/heads/{job['branch']}"]]
        try:
            for step in steps:
                done = subprocess.run(step, capture_output=True, text=True, timeout=600, env=env)
                if done.returncode != 0:
                    raise RunnerError(f"git {step[step.index('--git-dir') + 3]} failed: {tail(done.stderr.strip(), 5)}")
        finally:
            subprocess.run(["git", "--git-dir", mirror, "update-ref", "-d", ref], capture_output=True, env=env)

