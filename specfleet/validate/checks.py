# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Validate a whole project in one pass and report every problem.

Order of checks: ``project.yml``; each candidate file on its own (YAML, schema, paths,
durations, sections); then across files (duplicate ids, unknown dependencies, cycles,
executors, ``modifies`` against the repository tree). A file is reported valid when no
problem names it, so one bad spec does not hide its good siblings; but the project is
fed to the store only when nothing at all is wrong.

Which files are candidates and how they are read: :mod:`specfleet.validate.files`; the
repository checks: :mod:`specfleet.validate.repository`; what comes back:
:class:`~specfleet.validate.result.ValidationReport`.
"""
from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from specfleet.model.graph import SpecGraph
from specfleet.model.problems import Problem
from specfleet.model.project import PROJECT_NAME, ProjectConfig, load_project
from specfleet.model.spec import Spec, parse_spec, reserved_ids, show
from specfleet.validate import repository
from specfleet.validate.files import candidates, spec_text
from specfleet.validate.result import ValidationReport

__all__ = ["ValidationReport", "validate_project"]


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
    config = _project_config(report, Path(specs_root), project, root_display, env)
    if config is None:
        return report
    executor_names = None if executors is None else sorted(executors)
    if executor_names is not None and config.executor and config.executor not in executor_names:
        report.problems.append(Problem(report.project_file, None, "executor",
                                       f"{show(config.executor)} is not defined in the inventory",
                                       "defined: " + ", ".join(executor_names)))
    defaults = config.spec_defaults()
    if defaults["executor"] is None:
        defaults["executor"] = default_executor
    _parse_specs(report, Path(specs_root), f"{root_display}/{project}", config,
                 {"defaults": defaults, "executors": executor_names, "reserved": reserved_ids(inventory_groups)})
    specs = list(report.specs.values())
    _check_dependencies(report, specs)
    if check_repository:
        repository.check_repository(report, config, specs)
    report.problems = sorted(set(report.problems), key=Problem.sort_key)
    return report


def _project_config(report: ValidationReport, specs_root: Path, project: str, root_display: str,
                    env: dict[str, str] | None) -> ProjectConfig | None:
    """The project's name, folder and ``project.yml``; ``None`` (with the problems in ``report``) when any is wrong."""
    if not isinstance(project, str) or not PROJECT_NAME.fullmatch(project):
        report.problems.append(Problem(root_display, None, "project",
                                       f"{show(project)} is not a valid project name",
                                       "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"))
        return None
    folder = specs_root / project
    display = f"{root_display}/{project}"
    if not folder.is_dir():
        known = sorted(p.name for p in specs_root.iterdir() if p.is_dir()) if specs_root.is_dir() else []
        close = difflib.get_close_matches(project, known, n=1)
        hint = f"did you mean {close[0]!r}?" if close else ("projects: " + ", ".join(known) if known else "")
        report.problems.append(Problem(display, None, None, "is not a directory", hint))
        return None
    report.project_file = f"{display}/project.yml"
    config, problems = load_project(folder, project, report.project_file, env)
    report.config = config
    report.problems += problems
    return config


def _parse_specs(report: ValidationReport, specs_root: Path, display: str, config: ProjectConfig,
                 options: dict) -> None:
    """Parse every candidate file on its own into ``report.specs``; ``options`` are :func:`parse_spec`'s."""
    seen_ids: dict[str, Spec] = {}  # lower-cased id -> first spec with it
    real_root = os.path.realpath(specs_root)
    for entry, path in candidates(specs_root / report.project, display, config, report):
        text = spec_text(entry, path, real_root, report)
        if text is None:
            continue
        spec, problems = parse_spec(path, text, report.project, options["defaults"], stem=entry.name[:-3],
                                    executors=options["executors"], reserved=options["reserved"])
        report.files[path] = spec.task_id if spec else None
        report.problems += problems
        if spec is not None:
            _cross_check_duplicate(report, spec, seen_ids)
            report.specs.setdefault(spec.task_id, spec)


def _cross_check_duplicate(report: ValidationReport, spec: Spec, seen_ids: dict[str, Spec]) -> None:
    """Ids become branch names, and case-insensitive file systems fold case: compare lower-cased."""
    other = seen_ids.setdefault(spec.task_id.lower(), spec)
    if other is spec:
        return
    same = "the same" if other.task_id == spec.task_id else "a case-insensitively equal"
    report.problems.append(Problem(spec.path, None, "task_id", f"{spec.task_id!r} is {same} id as in {other.path}",
                                   "task ids must be unique in a project (branch names derive from them)"))
    report.problems.append(Problem(other.path, None, "task_id", f"{other.task_id!r} is also used by {spec.path}"))


def _check_dependencies(report: ValidationReport, specs: list[Spec]) -> None:
    """Every dependency is a spec of the project (with a close match suggested), and none is a cycle."""
    known_ids = sorted(report.specs)
    for spec in specs:
        for dep in spec.depends_on:
            if dep not in report.specs:
                close = difflib.get_close_matches(dep, [k for k in known_ids if k != spec.task_id], n=1)
                hint = f"did you mean {close[0]!r}?" if close else "known: " + ", ".join(known_ids)
                report.problems.append(Problem(spec.path, None, "depends_on",
                                               f"{show(dep)} is not a spec of project {report.project}", hint))

    graph = SpecGraph({s.task_id: s.depends_on for s in specs})
    for cycle in graph.cycles():
        if len(cycle) == 2:
            continue  # self-dependency, already reported by the spec parser
        text = " -> ".join(cycle)
        for member in sorted(set(cycle)):
            report.problems.append(Problem(report.specs[member].path, None, "depends_on",
                                           f"dependency cycle: {text}", "remove one of these dependencies"))
