# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A split checked as a whole: the project with the new specs goes through the validator, plus the planner's rules.

The planner's own rules, which the validator does not know: each new spec is
``min_estimate_s``-``max_estimate_s`` of agent work and lists what it modifies, and no two
new specs that may run at once (neither depends on the other) modify the same path.
"""
from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from specfleet.model.graph import SpecGraph
from specfleet.model.project import load_project
from specfleet.node.paths import sets_overlap
from specfleet.plan.base import PlanError, Settings
from specfleet.validate.checks import validate_project


def _trial(specs_root: Path, project: str, scratch: str) -> Path:
    """A copy of the project folder (without pending/) whose project.yml names the same repository."""
    folder = specs_root / project
    trial = Path(scratch) / project
    shutil.copytree(folder, trial, ignore=shutil.ignore_patterns("pending", ".*"))
    config, problems = load_project(folder, project, f"specs/{project}/project.yml")
    if config is None:
        raise PlanError("; ".join(map(str, problems)))
    if not config.is_remote:  # a relative repository is relative to the project folder, not to the copy
        data = yaml.safe_load((folder / "project.yml").read_text(encoding="utf-8")) or {}
        data["repository"] = str(config.repository)
        (trial / "project.yml").write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return trial


def _key(problem: Any) -> tuple:
    """A problem without its hint (hints list ids, which the new specs change)."""
    return (problem.path, problem.field, problem.message)


def check(specs_root: Path, project: str, rendered: Mapping[str, str], executors: Iterable[str] | None,
          default_executor: str | None, settings: Settings, approving: bool = False) -> list[str]:
    """Problems of the project with ``rendered`` added, that the project alone does not have."""
    return check_and_parse(specs_root, project, rendered, executors, default_executor, settings, approving)[0]


def check_and_parse(specs_root: Path, project: str, rendered: Mapping[str, str], executors: Iterable[str] | None,
           default_executor: str | None, settings: Settings, approving: bool = False) -> tuple[list[str], dict]:
    """:func:`check`, and the new specs as the validator parsed them (task id -> Spec)."""
    executors = None if executors is None else list(executors)
    pending = set() if approving else {p.name for p in (specs_root / project / "pending").glob("*.md")}
    with tempfile.TemporaryDirectory(prefix="specfleet-plan-") as scratch:
        trial = _trial(specs_root, project, scratch)
        baseline = validate_project(scratch, project, executors, default_executor, display_root="specs")
        broken = [p for p in baseline.problems if p.path.endswith("project.yml") or "repository" in (p.field or "")]
        if broken:
            raise PlanError("the project itself is not valid, so no split can be checked: "
                            + "; ".join(map(str, broken)))
        before = {_key(p) for p in baseline.problems}
        clashes = [f"specs/{project}/{name}: a spec file of that name exists already; choose another task_id"
                   for name in rendered if (trial / name).exists()]
        clashes += [f"specs/{project}/pending/{name}: a pending spec has that name (approve or delete it first, "
                    "or choose another task_id)" for name in rendered if name in pending]
        if clashes:
            return clashes, {}
        for name, text in rendered.items():
            (trial / name).write_text(text, encoding="utf-8")
        report = validate_project(scratch, project, executors, default_executor, display_root="specs")
    problems = [str(p) for p in report.problems if _key(p) not in before]
    parsed = {Path(s.path).name for s in report.specs.values()}
    problems += [f"specs/{project}/{name}: specfleet does not read this file name as a spec (a context file, "
                 f"README or an ignored name: {report.ignored.get('specs/' + project + '/' + name, 'not a spec')}); "
                 "choose another task_id" for name in rendered if name not in parsed]
    new = {name[:-3] for name in rendered}
    specs = {tid: s for tid, s in report.specs.items() if tid in new}
    for task_id, spec in sorted(specs.items()):
        seconds = spec.estimate if spec.front_matter.get("estimate") not in (None, "") else None
        if seconds is None:
            problems.append(f"specs/{project}/{task_id}.md: field 'estimate' is missing: each spec is "
                            f"{settings.min_estimate_s // 60}-{settings.max_estimate_s // 60} minutes of agent work")
        elif not settings.min_estimate_s <= seconds <= settings.max_estimate_s:
            shown = f"{seconds // 60}m" if seconds >= 60 else f"{seconds}s"
            problems.append(f"specs/{project}/{task_id}.md: field 'estimate': {shown} is outside "
                            f"{settings.min_estimate_s // 60}-{settings.max_estimate_s // 60} minutes of agent work: "
                            + ("split it" if seconds > settings.max_estimate_s else "merge it with a neighbour"))
        if not spec.modifies:
            problems.append(f"specs/{project}/{task_id}.md: field 'modifies' is empty: list every file it changes")
    graph = SpecGraph({tid: s.depends_on for tid, s in report.specs.items()})
    ids = sorted(specs)
    for i, first in enumerate(ids):
        for second in ids[i + 1:]:
            if second in graph.descendants(first) or first in graph.descendants(second):
                continue
            overlap = sets_overlap(list(specs[first].modifies), list(specs[second].modifies))
            if overlap:
                a, b = overlap[0]
                problems.append(f"specs/{project}/{second}.md: field 'modifies': {b!r} overlaps {a!r} of {first}, and "
                                "neither depends on the other: they could run at once and trample each other "
                                "(order them with depends_on, or give each its own files)")
    return problems, specs

