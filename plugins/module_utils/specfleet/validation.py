# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Validate a whole project in one pass and report every problem.

Order of checks: ``project.yml``; each candidate file on its own (YAML, schema, paths,
durations, sections); then across files (duplicate ids, unknown dependencies, cycles,
executors, ``modifies`` against the repository tree). A file is reported valid when no
problem names it, so one bad spec does not hide its good siblings; but the project is
fed to the store only when nothing at all is wrong.
"""
from __future__ import annotations

import difflib
import fnmatch
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import frontmatter
from .graph import SpecGraph
from .paths import is_glob, literal_prefix
from .problems import Problem
from .project import PROJECT_NAME, ProjectConfig, RepositoryError, load_project, repository_files
from .spec import Spec, parse_spec

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
        if not name.endswith(".md") or entry.is_dir():
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


def _check_modifies(spec: Spec, files: set[str], dirs: set[str], branch: str) -> list[Problem]:
    """Each entry must name something that exists at ``branch`` or could be created there."""
    problems = []
    declared_dirs = {m for m in spec.modifies if m.endswith("/")}
    for entry in spec.modifies:
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
                     check_repository: bool = True, display_root: str | None = None) -> ValidationReport:
    """Validate ``<specs_root>/<project>``.

    ``executors`` are the names defined in the inventory; ``None`` skips that check (for
    tools that have no inventory). ``default_executor`` is the inventory's fallback for
    specs and projects that name none. ``display_root`` is how messages spell
    ``specs_root`` (e.g. ``specs`` rather than an absolute path).
    """
    report = ValidationReport(project)
    root_display = (display_root or str(specs_root)).rstrip("/") or "."
    if not isinstance(project, str) or not PROJECT_NAME.match(project):
        report.problems.append(Problem(root_display, None, "project",
                                       f"{project!r} is not a valid project name",
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
                                       f"{config.executor!r} is not defined in the inventory",
                                       "defined: " + ", ".join(executor_names)))

    seen_ids: dict[str, Spec] = {}  # lower-cased id -> first spec with it
    defaults = config.spec_defaults()
    if defaults["executor"] is None:
        defaults["executor"] = default_executor
    for entry, path in _candidates(folder, display, config, report):
        try:
            raw = entry.read_bytes()
        except OSError as exc:
            report.problems.append(Problem(path, None, None, f"cannot be read: {exc.strerror}"))
            continue
        if len(raw) > MAX_SPEC_BYTES:
            report.problems.append(Problem(path, None, None, f"is {len(raw)} bytes; a spec is at most {MAX_SPEC_BYTES}",
                                           "split it into smaller specs"))
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            report.problems.append(Problem(path, None, None, f"is not UTF-8 text (byte {exc.start})"))
            continue
        stem = entry.name[:-3]
        if not frontmatter.has_front_matter(text):
            if LOOKS_LIKE_SPEC.match(stem):
                report.problems.append(Problem(path, 1, None, "looks like a spec but has no YAML front matter",
                                               "start the file with a '---' line, or rename it to _" + entry.name))
            else:
                report.ignored[path] = "no front matter"
            continue
        spec, problems = parse_spec(path, text, project, defaults, stem=stem, executors=executor_names)
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
                                               f"{dep!r} is not a spec of project {project}", hint))

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
    for spec in specs:
        report.problems += _check_modifies(spec, files, dirs, config.base_branch)
