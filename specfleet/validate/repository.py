# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Each spec's ``modifies`` against the repository: it names something on the base branch, or something
that could be created there, and no committed symbolic link leads it out of the worktree."""
from __future__ import annotations

import os
from collections.abc import Iterable

from specfleet.model.problems import Problem
from specfleet.model.project import ProjectConfig, RepositoryError, repository_files, run_git
from specfleet.model.spec import Spec, show
from specfleet.node.paths import PATH_MAX, is_glob, literal_prefix
from specfleet.validate.result import ValidationReport


def check_repository(report: ValidationReport, config: ProjectConfig, specs: list[Spec]) -> None:
    if config.is_remote:
        report.notes.append(f"repository {config.repository} is remote; modifies paths were not checked "
                            "against its tree")
        return
    try:
        files = repository_files(config.repository, config.base_branch)
    except RepositoryError as exc:
        report.problems.append(Problem(report.project_file, None, "repository", str(exc),
                                       "point it at a local git repository with that branch, or a URL"))
        return
    dirs = {os.path.dirname(f) + "/" for f in files}
    for path in list(dirs):
        while "/" in path.rstrip("/"):
            path = os.path.dirname(path.rstrip("/")) + "/"
            dirs.add(path)
    links = _CommittedLinks(config.repository, config.base_branch)
    for spec in specs:
        escaping = set()
        for entry in spec.modifies:
            try:
                leak = links.escape(entry)
            except RepositoryError as exc:
                report.problems.append(Problem(report.project_file, None, "repository",
                                               f"cannot read the symbolic links on {config.base_branch}: {exc}"))
                return
            if leak:
                escaping.add(entry)
                link, target, why = leak
                report.problems.append(Problem(
                    spec.path, spec.key_lines.get("modifies"), "modifies",
                    f"{show(entry, 200)} goes through the symbolic link {show(link, 200)} -> {show(target, 200)} "
                    f"committed on {config.base_branch}, which {why}",
                    "name the real path inside the repository, or remove the link"))
        kept = [m for m in spec.modifies if m not in escaping]
        report.problems += _check_modifies(spec, files, dirs, config.base_branch, kept)



def _check_modifies(spec: Spec, files: set[str], dirs: set[str], branch: str,
                    entries: Iterable[str] | None = None) -> list[Problem]:
    """Each entry (default: all of the spec's) must name something that exists at ``branch`` or could be created there."""
    problems = []
    declared_dirs = {m for m in spec.modifies if m.endswith("/")}
    for entry in spec.modifies if entries is None else entries:
        if is_glob(entry):
            prefix = literal_prefix(entry)
            anchor = prefix if prefix.endswith("/") or not prefix else os.path.dirname(prefix) + "/"
            if anchor in ("/", "") or anchor in dirs:
                continue
            problems.append(Problem(spec.path, None, "modifies",
                                    f"glob {entry!r} is rooted at {anchor!r}, which does not exist on {branch}"))
            continue
        if entry.endswith("/"):
            if entry in dirs:
                continue
            if entry.rstrip("/") in files:
                problems.append(Problem(spec.path, None, "modifies", f"{entry!r} is a file on {branch}, not a directory",
                                        f"write {entry.rstrip('/')!r}"))
                continue
            parent = os.path.dirname(entry.rstrip("/"))
            if not parent or parent + "/" in dirs:
                continue  # a new directory in an existing one
            problems.append(Problem(spec.path, None, "modifies",
                                    f"{entry!r} points nowhere: neither it nor {parent + '/'!r} exists on {branch}",
                                    "list its parent directory too if the spec creates both"))
            continue
        if entry in files:
            continue
        if entry + "/" in dirs:
            problems.append(Problem(spec.path, None, "modifies", f"{entry!r} is a directory on {branch}",
                                    f"write {entry + '/'!r} (a trailing / means a directory)"))
            continue
        parent = os.path.dirname(entry)
        if not parent or parent + "/" in dirs or parent + "/" in declared_dirs:
            continue  # a new file in an existing (or declared new) directory
        problems.append(Problem(spec.path, None, "modifies",
                                f"{entry!r} points nowhere: neither it nor its directory {parent + '/'!r} exists on {branch}",
                                f"fix the path, or add {parent + '/'!r} if the spec creates that directory"))
    return problems



class _CommittedLinks:
    """Symbolic links committed on a branch, followed the way a checkout would follow them.

    An agent told it may modify ``docs/x`` edits whatever ``docs`` points to; a link to
    ``/etc`` or ``../..`` lets it write outside its worktree. Links are read from the
    committed tree (mode 120000), not the working copy, because that is what worktrees
    check out. The tree listing is fetched once, only when some entry is asked about.
    """

    MAX_HOPS = 40  # as the kernel's ELOOP limit

    def __init__(self, repository: str, branch: str):
        self.repository = repository
        self.branch = branch
        self._links: dict[str, str] | None = None  # path -> blob id
        self._targets: dict[str, str | None] = {}

    def _load(self) -> dict[str, str]:
        if self._links is None:
            listing = run_git(self.repository, "ls-tree", "-r", "-z", "--full-tree", f"refs/heads/{self.branch}")
            self._links = {}
            for record in listing.split("\x00"):
                meta, _tab, name = record.partition("\t")
                if meta.startswith("120000 "):
                    self._links[name] = meta.split()[2]
        return self._links

    def _target(self, link: str) -> str | None:
        """The link's target text; ``None`` when it is longer than any path can be."""
        if link not in self._targets:
            blob = self._load()[link]
            size = int(run_git(self.repository, "cat-file", "-s", blob).strip() or 0)
            try:
                self._targets[link] = run_git(self.repository, "cat-file", "blob", blob) if size <= PATH_MAX else None
            except UnicodeDecodeError:  # not a path anyone can check out portably
                self._targets[link] = None
        return self._targets[link]

    def escape(self, entry: str) -> tuple[str, str, str] | None:
        """``(link, target, why)`` when ``entry``'s existing part leads out of the worktree, else ``None``."""
        if is_glob(entry):  # the directories before the first wildcard
            prefix = literal_prefix(entry)
            path = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        else:
            path = entry.rstrip("/")
        if not path or not self._load():
            return None
        pending = path.split("/")
        resolved: list[str] = []
        hops = 0
        link = target = ""
        while pending:
            part = pending.pop(0)
            if part in ("", "."):
                continue
            if part == ".." and resolved:
                resolved.pop()
                continue
            if part == "..":
                return (link, target, "leaves the repository") if link else None
            if part == ".git":
                return (link, target, "leads into .git, where hooks run code") if link else None
            resolved.append(part)
            current = "/".join(resolved)
            if current not in self._links:
                continue
            hops += 1
            text = self._target(current)
            if hops > self.MAX_HOPS:
                return current, text or "", f"is part of a loop of links (more than {self.MAX_HOPS})"
            link, target = current, text if text is not None else "<a target longer than PATH_MAX or not UTF-8>"
            if text is None or text.startswith("/"):
                return link, target, "leaves the repository"
            resolved.pop()
            pending = text.split("/") + pending
        return None
