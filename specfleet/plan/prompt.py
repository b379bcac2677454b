# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The planner's prompt: the versioned Jinja2 template filled with the project, its repository and the direction."""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from specfleet.attempt.workspace import read_at as _read_at
from specfleet.model.project import RepositoryError, repository_files
from specfleet.plan.base import PlanError, Settings
from specfleet.validate.checks import validate_project

SYSTEM = ("You are the planner of specfleet. You split one direction into atomic specs for autonomous coding "
          "agents. Answer with exactly one JSON object as the prompt describes, and nothing else.")
TREE_LIMIT = 400
CONTEXT_LIMIT = 12000


def prompt(settings: Settings, project: str, direction: str, specs_root: Path, default_executor: str | None,
           executors: Iterable[str] | None) -> str:
    """The user message, from the versioned Jinja2 template."""
    import jinja2

    report = validate_project(specs_root, project, executors, default_executor, check_repository=False)
    config = report.config
    if config is None:
        raise PlanError("; ".join(map(str, report.problems)))
    try:
        tree = sorted(repository_files(config.repository, config.base_branch)) if not config.is_remote else []
    except RepositoryError as exc:
        raise PlanError(f"project {project}: {exc}") from None
    context = {}
    for name in ("CLAUDE.md", "AGENTS.md", *config.context_files, "SHARED_CONTEXT.md"):
        if name in context:
            continue
        path = config.folder / name  # the spec folder first, then the repository's base branch
        text = path.read_text(encoding="utf-8", errors="replace") if path.is_file() else (
            "" if config.is_remote else _read_at(config.repository, config.base_branch, name))
        if text.strip():
            context[name] = text[:CONTEXT_LIMIT]
    existing = [{"task_id": s.task_id, "title": s.front_matter.get("title") or _first_line(s.sections.get("goal", "")),
                 "depends_on": list(s.depends_on), "modifies": list(s.modifies)} for s in report.specs.values()]
    existing += [{"task_id": p.name[:-3] + " (pending approval)", "title": "", "depends_on": [], "modifies": []}
                 for p in sorted((config.folder / "pending").glob("*.md")) if not p.name.startswith(("_", "."))]
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(settings.template.parent)), autoescape=False,
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True, trim_blocks=True,
                             lstrip_blocks=True)
    try:
        return env.get_template(settings.template.name).render(
        project=project, description=config.description or "", direction=direction, base_branch=config.base_branch,
        verify=config.verify or "", test_command=config.test_command or "", executors=sorted(executors or []),
        default_executor=default_executor or "", tree=tree[:TREE_LIMIT], tree_total=len(tree), context=context,
        existing=sorted(existing, key=lambda s: s["task_id"]), max_specs=settings.max_specs,
        min_minutes=settings.min_estimate_s // 60, max_minutes=settings.max_estimate_s // 60)
    except jinja2.TemplateError as exc:
        raise PlanError(f"prompt template {settings.template}: {exc}") from None


def _first_line(text: str) -> str:
    return next((line.strip("#-* ").strip() for line in text.splitlines() if line.strip()), "")[:160]

