# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Validate a whole project in one pass and report every problem.

Order of checks: ``project.yml``; each candidate file on its own (YAML, schema, paths,
durations, sections); then across files (duplicate ids, unknown dependencies, cycles,
executors, ``modifies`` against the repository tree). A file is reported valid when no
problem names it, so one bad spec does not hide its good siblings; but the project is
fed to the store only when nothing at all is wrong.

Spec files are read defensively (:func:`_read_spec_file`): only regular files, checked
with ``stat`` before opening (a FIFO would block the read forever, ``/dev/zero`` never
ends) and with ``fstat`` after; the size is checked before reading and at most
``MAX_SPEC_BYTES + 1`` bytes are read; a symbolic link is followed only when it stays
inside the specs folder.
"""
from __future__ import annotations

import difflib
import fnmatch
import os
import re
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from specfleet.model import frontmatter
from specfleet.model.graph import SpecGraph
from specfleet.model.problems import Problem
from specfleet.model.project import PROJECT_NAME, ProjectConfig, RepositoryError, load_project, repository_files, run_git
from specfleet.model.spec import Spec, parse_spec, reserved_ids, show
from specfleet.node.paths import PATH_MAX, is_glob, literal_prefix

# Markdown files that live beside specs and are never specs.
NON_SPEC_NAMES = frozenset({"README.md", "SHARED_CONTEXT.md", "CLAUDE.md", "AGENTS.md", "CHANGELOG.md"})
# A file without front matter whose name looks like this was meant to be a spec.
LOOKS_LIKE_SPEC = re.compile(r"^[A-Za-z]{1,4}-?\d+")
MAX_SPEC_BYTES = 256 * 1024


@dataclass
class ValidationReport:
    project: str
    project_file: str = ""
    config: ProjectConfig | None = None
    specs: dict[str, Spec] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    files: dict[str, str | None] = field(default_factory=dict)  # display path -> task id
    ignored: dict[str, str] = field(default_factory=dict)       # display path -> why
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def invalid_paths(self) -> set[str]:
        return {p.path for p in self.problems}

    @property
    def valid_ids(self) -> list[str]:
        bad = self.invalid_paths
        return sorted(s.task_id for s in self.specs.values() if s.path not in bad)

    def summary(self) -> str:
        lines = []
        if self.ok:
            lines.append(f"project {self.project}: {len(self.specs)} specs valid")
        else:
            lines.append(f"project {self.project}: {len(self.problems)} problem(s) in "
                         f"{len(self.invalid_paths)} file(s); nothing was queued")
            lines += [f"  - {p}" for p in sorted(self.problems, key=Problem.sort_key)]
            if self.valid_ids:
                lines.append("valid: " + ", ".join(self.valid_ids))
        lines += [f"not a spec: {path} ({why})" for path, why in sorted(self.ignored.items())]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {
            "project": self.project, "ok": self.ok,
            "problems": [p.as_dict() for p in sorted(self.problems, key=Problem.sort_key)],
            "valid": self.valid_ids,
            "invalid": sorted(self.invalid_paths),
            "specs": {t: s.as_dict() for t, s in sorted(self.specs.items())},
            "ignored": dict(sorted(self.ignored.items())),
            "notes": list(self.notes),
        }


def _display_name(name: str) -> str:
    return name if name.isprintable() else repr(name)[1:-1]


def _candidates(folder: Path, display_root: str, config: ProjectConfig, report: ValidationReport):
    context = {os.path.basename(c) for c in config.context_files}
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        name = entry.name
        display = f"{display_root}/{_display_name(name)}"
        if not name.endswith(".md"):
            continue
        if os.path.isdir(entry) and not os.path.islink(entry):
            report.ignored[display] = "a directory"
            continue
        if name.startswith(("_", ".")):
            report.ignored[display] = "name starts with '_' or '.'"
            continue
        if name in NON_SPEC_NAMES or name in context:
            report.ignored[display] = "context file"
            continue
        if any(fnmatch.fnmatch(name, pattern) for pattern in config.ignore):
            report.ignored[display] = "matches project.yml 'ignore'"
            continue
        yield entry, display


_FILE_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
               (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
               (stat.S_ISSOCK, "a socket"))


def _kind(mode: int) -> str:
    return next((name for test, name in _FILE_KINDS if test(mode)), "not a regular file")


def _read_spec_file(entry: Path, specs_root: str) -> tuple[bytes | None, str, str]:
    """The bytes of a spec file, or ``None`` with what is wrong and what would be right.

    ``specs_root`` is the real path a symbolic link must stay inside.
    """
    not_regular = "a spec is a regular markdown file"
    try:
        if os.path.islink(entry):
            real = os.path.realpath(entry)
            if os.path.commonpath([real, specs_root]) != specs_root:
                return None, f"is a symbolic link to {show(real, 120)}, outside the specs folder", \
                    "copy the spec into the project folder instead of linking to it"
        info = os.stat(entry)  # follows a link; never opens, so a FIFO cannot block here
        if not stat.S_ISREG(info.st_mode):
            return None, f"is {_kind(info.st_mode)}, not a regular file", not_regular
        if info.st_size > MAX_SPEC_BYTES:
            return None, f"is {info.st_size} bytes; a spec is at most {MAX_SPEC_BYTES}", "split it into smaller specs"
        # O_NONBLOCK: if the file was swapped for a FIFO since the stat, open must not wait for a writer.
        fd = os.open(entry, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        return None, f"cannot be read: {exc.strerror}", ""
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None, f"is {_kind(info.st_mode)}, not a regular file", not_regular
        chunks, size = [], 0
        while size <= MAX_SPEC_BYTES:
            # Ask for what stat promised plus a page (a file may grow), never a 256 KB buffer per small file.
            chunk = os.read(fd, min(MAX_SPEC_BYTES + 1 - size, max(info.st_size - size, 0) + 4096))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        return None, f"cannot be read: {exc.strerror}", ""
    finally:
        os.close(fd)
    if size > MAX_SPEC_BYTES:
        return None, f"is more than {MAX_SPEC_BYTES} bytes; a spec is at most {MAX_SPEC_BYTES}", \
            "split it into smaller specs"
    return b"".join(chunks), "", ""


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


def validate_project(specs_root: str | Path, project: str, executors: Iterable[str] | None = None,
                     default_executor: str | None = None, env: dict[str, str] | None = None,
                     check_repository: bool = True, display_root: str | None = None,
                     inventory_groups: Mapping[str, Iterable[str]] | None = None) -> ValidationReport:
    """Validate ``<specs_root>/<project>``.

    ``executors`` are the names defined in the inventory; ``None`` skips that check (for
    tools that have no inventory). ``default_executor`` is the inventory's fallback for
    specs and projects that name none. ``display_root`` is how messages spell
    ``specs_root`` (e.g. ``specs`` rather than an absolute path). ``inventory_groups``
    is Ansible's ``groups`` variable (group -> host names): no task id may equal one of
    those names, nor a name Ansible reserves (``localhost``, ``all``, ``ungrouped``).
    """
    report = ValidationReport(project)
    root_display = (display_root or str(specs_root)).rstrip("/") or "."
    if not isinstance(project, str) or not PROJECT_NAME.fullmatch(project):
        report.problems.append(Problem(root_display, None, "project",
                                       f"{show(project)} is not a valid project name",
                                       "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"))
        return report
    folder = Path(specs_root) / project
    display = f"{root_display}/{project}"
    if not folder.is_dir():
        known = sorted(p.name for p in Path(specs_root).iterdir() if p.is_dir()) if Path(specs_root).is_dir() else []
        close = difflib.get_close_matches(project, known, n=1)
        hint = f"did you mean {close[0]!r}?" if close else ("projects: " + ", ".join(known) if known else "")
        report.problems.append(Problem(display, None, None, "is not a directory", hint))
        return report
    report.project_file = f"{display}/project.yml"
    config, problems = load_project(folder, project, report.project_file, env)
    report.config = config
    report.problems += problems
    if config is None:
        return report

    executor_names = None if executors is None else sorted(executors)
    if executor_names is not None and config.executor and config.executor not in executor_names:
        report.problems.append(Problem(report.project_file, None, "executor",
                                       f"{show(config.executor)} is not defined in the inventory",
                                       "defined: " + ", ".join(executor_names)))

    seen_ids: dict[str, Spec] = {}  # lower-cased id -> first spec with it
    defaults = config.spec_defaults()
    if defaults["executor"] is None:
        defaults["executor"] = default_executor
    reserved = reserved_ids(inventory_groups)
    real_root = os.path.realpath(specs_root)
    for entry, path in _candidates(folder, display, config, report):
        raw, wrong, hint = _read_spec_file(entry, real_root)
        if raw is None:
            report.problems.append(Problem(path, None, None, wrong, hint))
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            report.problems.append(Problem(path, raw.count(b"\n", 0, exc.start) + 1, None,
                                           f"is not UTF-8 text (byte {exc.start})", "save it as UTF-8"))
            continue
        stem = entry.name[:-3]
        if not frontmatter.has_front_matter(text):
            if LOOKS_LIKE_SPEC.match(stem):
                state = "is empty" if not text.strip() else "has no YAML front matter"
                report.problems.append(Problem(path, 1, None, f"looks like a spec but {state}",
                                               "start the file with a '---' line, or rename it to _" + entry.name))
            else:
                report.ignored[path] = "no front matter"
            continue
        spec, problems = parse_spec(path, text, project, defaults, stem=stem, executors=executor_names,
                                    reserved=reserved)
        report.files[path] = spec.task_id if spec else None
        report.problems += problems
        if spec is not None:
            _cross_check_duplicate(report, spec, seen_ids)
            report.specs.setdefault(spec.task_id, spec)

    specs = list(report.specs.values())
    known_ids = sorted(report.specs)
    for spec in specs:
        for dep in spec.depends_on:
            if dep not in report.specs:
                close = difflib.get_close_matches(dep, [k for k in known_ids if k != spec.task_id], n=1)
                hint = f"did you mean {close[0]!r}?" if close else "known: " + ", ".join(known_ids)
                report.problems.append(Problem(spec.path, None, "depends_on",
                                               f"{show(dep)} is not a spec of project {project}", hint))

    graph = SpecGraph({s.task_id: s.depends_on for s in specs})
    for cycle in graph.cycles():
        if len(cycle) == 2:
            continue  # self-dependency, already reported by the spec parser
        text = " -> ".join(cycle)
        for member in sorted(set(cycle)):
            report.problems.append(Problem(report.specs[member].path, None, "depends_on",
                                           f"dependency cycle: {text}", "remove one of these dependencies"))

    if check_repository:
        _check_repository(report, config, specs)
    report.problems = sorted(set(report.problems), key=Problem.sort_key)
    return report


def _cross_check_duplicate(report: ValidationReport, spec: Spec, seen_ids: dict[str, Spec]) -> None:
    """Ids become branch names, and case-insensitive file systems fold case: compare lower-cased."""
    other = seen_ids.setdefault(spec.task_id.lower(), spec)
    if other is spec:
        return
    same = "the same" if other.task_id == spec.task_id else "a case-insensitively equal"
    report.problems.append(Problem(spec.path, None, "task_id", f"{spec.task_id!r} is {same} id as in {other.path}",
                                   "task ids must be unique in a project (branch names derive from them)"))
    report.problems.append(Problem(other.path, None, "task_id", f"{other.task_id!r} is also used by {spec.path}"))


def _check_repository(report: ValidationReport, config: ProjectConfig, specs: list[Spec]) -> None:
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
