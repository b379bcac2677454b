# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The controller's side of a spec's git work: base, dependencies, mirrors, results.

Branches in the project's repository:

* ``specfleet/<project>/integration``: where verified work lands (:mod:`.landing`); a
  spec starts from it when it exists, else from the project's ``base_branch``; its
  dependencies are merged there before it starts;
* ``specfleet/<project>/<task id>``: the spec's collected result.

Each node keeps a bare mirror per project (``<work root>/mirrors/<project>.git``). With
the default ``bundle`` transport the controller sends a ``git bundle`` holding only the
commits the node lacks (the node's ref tips are the bundle's prerequisites) and the node
fetches it under ``flock``; results come back as a bundle too. With ``remote``, nodes
fetch from the repository URL and push the spec's branch there.
"""
from __future__ import annotations

import os
import shlex
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from specfleet.dispatch.jobs import _project_path, component, shell_path
from specfleet.model.project import RepositoryError, git_process, git_succeeds, run_git
from specfleet.model.settings import specfleet_home


class GitError(Exception):
    pass


def spec_branch(project: str, task_id: str) -> str:
    return f"specfleet/{project}/{task_id}"


def integration_branch(project: str) -> str:
    return f"specfleet/{project}/integration"


def mirror_dir(root: str, project: str) -> str:
    return "/".join([root.rstrip("/") or "/", "mirrors", *_project_path(project)]) + ".git"


def artifacts_dir(project: str, task_id: str, attempt: int, run_id: str, base: str | None = None) -> Path:
    """``$SPECFLEET_HOME/artifacts/<project>/<task id>/<attempt>-<run id>`` on the controller."""
    root = Path(base).expanduser() if base else specfleet_home() / "artifacts"
    return root.joinpath(*_project_path(project), component(task_id, "task id"),
                         component(f"{attempt}-{run_id}", "attempt and run id"))


def git(repository: str, *args: str, check: bool = True, timeout: float = 300) -> str:
    """:func:`project.run_git` (the controller's one git runner), with the command and repository in the error."""
    try:
        return run_git(repository, *args, check=check, timeout=timeout)
    except RepositoryError as exc:
        raise GitError(f"git {' '.join(args[:2])} in {repository}: {exc}") from exc


def on_node(path: str, home: str) -> str:
    """A node path with a leading ``~/`` made absolute with the login user's ``home``."""
    return home.rstrip("/") + path[1:] if path.startswith("~/") else path


def _tips(repository: str, remote: bool, refs: list[str]) -> dict[str, str]:
    if remote:
        out = git(os.getcwd(), "ls-remote", repository, *refs)
        return {ref: sha for sha, ref in (line.split("\t", 1) for line in out.splitlines() if "\t" in line)}
    tips = {}
    for ref in refs:
        sha = git(repository, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False).strip()
        if sha:
            tips[ref] = sha
    return tips


@dataclass
class Start:
    """Where a spec's workspace starts: the integration tip (else the base branch)."""

    base_ref: str
    base: str

    @property
    def refs(self) -> dict[str, str]:
        return {self.base_ref: self.base}


def resolve_start(repository: str, remote: bool, project: str, base_branch: str, depends_on: list[str]) -> Start:
    """The spec starts from the integration tip (else the base branch), which holds its merged dependencies.

    Dependencies start their dependents only once merged (the dispatcher's rule); for a
    local repository this is checked against git, so a dependent never starts without
    its dependencies' work.
    """
    integration = f"refs/heads/{integration_branch(project)}"
    base = f"refs/heads/{base_branch}"
    deps = {d: f"refs/heads/{spec_branch(project, d)}" for d in depends_on}
    tips = _tips(repository, remote, [integration, base, *deps.values()])
    base_ref = integration if integration in tips else base
    if base_ref not in tips:
        raise GitError(f"branch {base_branch!r} does not exist in {repository}")
    if not remote:
        outside = [d for d, ref in deps.items() if ref not in tips or not is_ancestor(repository, tips[ref], tips[base_ref])]
        if outside:
            raise GitError(f"dependencies not merged into {base_ref.removeprefix('refs/heads/')}: "
                           + ", ".join(outside) + " (run playbooks/merge.yml)")
    return Start(base_ref, tips[base_ref])


def bundle_for_node(repository: str, start: Start, node_tips: list[str], dest: Path) -> list[str]:
    """Write a bundle of the start refs minus what the node has; -> the refs it holds.

    A ref whose commit the node already has is left out by git, so the node fetches only
    the refs listed here (none: the node has everything and no bundle was written).
    """
    if set(start.refs.values()) <= set(node_tips):
        return []
    known = [sha for sha in node_tips if git_succeeds(repository, "cat-file", "-e", f"{sha}^{{commit}}")]
    # A bundle is made of refs, read when it is written; the merge queue may move the start
    # ref (the integration branch) in the meantime, even to a commit that does not contain
    # the start. A ref of its own, pointing at the start commit, puts that commit in the
    # bundle whatever happens to the branch; it is removed here once the bundle is written.
    # Its name is unique: several workers may bundle the same start commit at once.
    pin = f"refs/specfleet/start/{start.base}/{uuid.uuid4().hex[:16]}"
    git(repository, "update-ref", pin, start.base)
    try:
        result = git_process(repository, "bundle", "create", "-q", str(dest), *start.refs, pin,
                             *[f"^{sha}" for sha in known], timeout=None)
    finally:
        git(repository, "update-ref", "-d", pin)
    if result.returncode != 0:
        if "empty bundle" in result.stderr:
            return []
        raise GitError(f"git bundle create in {repository}: {result.stderr.strip()[-300:]}")
    heads = git(repository, "bundle", "list-heads", str(dest))
    return [line.split(" ", 1)[1] for line in heads.splitlines() if " " in line]


def send_bundle(repository: str, start: Start, node_tips: list[str], mirror: str, remote_dir: str,
                shell: Callable[[str], dict], put: Callable[[str, str], None]) -> list[str]:
    """Bring ``start``'s refs into the node's ``mirror``: a bundle of what it lacks, copied and fetched.

    ``shell(script)`` runs a script on the node (``{"rc", "stdout", "stderr"}``) and
    ``put(local, remote)`` copies a file there; ``remote_dir`` (absolute) receives the
    bundle, which the fetch removes. Returns the refs sent (none: the node had them).
    """
    with tempfile.TemporaryDirectory(prefix="specfleet-bundle-") as folder:
        bundle = Path(folder) / "sync.bundle"
        refs = bundle_for_node(repository, start, node_tips, bundle)
        if refs:
            remote = f"{remote_dir.rstrip('/')}/sync.bundle"
            put(str(bundle), remote)
            fetched = shell(mirror_fetch_script(mirror, remote, refs))
            if fetched["rc"] != 0:
                raise GitError(f"the node could not fetch the bundle into {mirror}: {fetched['stderr'].strip()[-500:]}")
    return refs


def is_ancestor(repository: str, older: str, newer: str) -> bool:
    return git_succeeds(repository, "merge-base", "--is-ancestor", older, newer)


def collect_script(run: str, names_pattern: str) -> str:
    """Print HOME, then pack the run directory's artifacts (names matching the ERE) into ``collect.tar``."""
    r = shell_path(run)
    return (f'echo "HOME=$HOME"; cd {r} || exit 3\n'
            f"ls -1 | grep -E {shlex.quote(names_pattern)} | tar -cf collect.tar -T - && echo PACKED\n")


def mirror_probe_script(mirror: str, run: str) -> str:
    """Create the mirror if needed; print HOME, ATTACHED (job already started) and the mirror's tips."""
    m, r = shell_path(mirror), shell_path(run)
    return (
        "umask 077; set -e\n"
        'echo "HOME=$HOME"\n'
        f"mkdir -p {r} \"$(dirname {m})\"\n"
        f"[ -e {r}/wrapper_pid ] && echo ATTACHED\n"
        # The marker is written last, under the lock: a mirror another start is still
        # creating (HEAD there, refs not yet) is waited for, never read half-made.
        f"if [ ! -e {m}/specfleet.ready ]; then flock {m}.lock sh -c 'test -e \"$1/specfleet.ready\" || "
        "{ git init -q --bare \"$1\" && git --git-dir \"$1\" config gc.auto 0 && "
        "git --git-dir \"$1\" config gc.pruneExpire never && touch \"$1/specfleet.ready\"; }' _ " + m + "; fi\n"
        f"echo TIPS; git --git-dir {m} for-each-ref --format='%(objectname)'\n"
    )


def mirror_fetch_script(mirror: str, bundle: str, refs: list[str]) -> str:
    m, b = shell_path(mirror), shell_path(bundle)
    specs = " ".join(shlex.quote(f"+{ref}:{ref}") for ref in refs)
    return (f"flock {m}.lock git --git-dir {m} fetch -q --no-tags {b} {specs}; rc=$?; rm -f {b}; exit $rc\n")


def parse_probe(stdout: str) -> tuple[str, bool, list[str]]:
    head, _, tips = stdout.partition("TIPS\n")
    home = next((line[5:] for line in head.splitlines() if line.startswith("HOME=")), "")
    return home, "ATTACHED" in head.splitlines(), [t.strip() for t in tips.splitlines() if len(t.strip()) == 40]


def import_result(repository: str, bundle: Path, branch: str, commit: str) -> None:
    """Fetch the spec's branch from a result bundle; it must hold exactly ``commit``."""
    git(repository, "bundle", "verify", "-q", str(bundle))
    ref = f"refs/heads/{branch}"
    git(repository, "fetch", "-q", "--no-tags", str(bundle), f"+{ref}:{ref}")
    got = git(repository, "rev-parse", ref).strip()
    if got != commit:
        raise GitError(f"{ref} is {got} after the fetch, but the node committed {commit}")


def check_pushed(repository: str, branch: str, commit: str) -> None:
    tips = _tips(repository, True, [f"refs/heads/{branch}"])
    if tips.get(f"refs/heads/{branch}") != commit:
        raise GitError(f"{branch} at {repository} is {tips.get(f'refs/heads/{branch}') or 'missing'}, "
                       f"not the node's commit {commit}")


def read_at(repository: str, commit: str, path: str) -> str:
    """A file of the repository at ``commit`` ('' if absent or when only a URL is known)."""
    if not os.path.isdir(repository):
        return ""
    return git(repository, "show", f"{commit}:{path}", check=False)
