# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The planning stage: a one-line direction becomes validated atomic specs.

A model behind an OpenAI-compatible endpoint (:mod:`chat`) gets a versioned Jinja2 prompt
(``templates/plan/``): the spec contract, the project's existing specs, its repository
tree and context files, the direction and the seeds' rules. It answers with one JSON
object: an execution plan and the specs. Each spec is rendered as a spec file and the
whole project (existing specs plus the new ones) goes through the same validator as
hand-written specs, plus the planner's own rules (no two specs that may run in parallel
modify the same path; 5-15 minutes each; no placeholders). Invalid answers are sent back
with the exact errors, up to a number of repair rounds. Nothing invalid is ever written:
the specs land only when every one is valid, in ``specs/<project>/pending/`` (or the
project itself), with the execution plan and a Mermaid picture of the DAG beside them.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from specfleet.attempt.workspace import read_at as _read_at
from specfleet.model.graph import SpecGraph
from specfleet.model.project import RepositoryError, load_project, repository_files
from specfleet.node.paths import sets_overlap
from specfleet.ops.controller import REPO_ROOT
from specfleet.plan import chat
from specfleet.validate.checks import validate_project

TEMPLATES = REPO_ROOT / "templates" / "plan"
PROMPT_VERSION = "v1"
SYSTEM = ("You are the planner of specfleet. You split one direction into atomic specs for autonomous coding "
          "agents. Answer with exactly one JSON object as the prompt describes, and nothing else.")
SPEC_KEYS = ("task_id", "title", "priority", "depends_on", "modifies", "executor", "estimate", "timeout", "verify",
             "goal", "constraints", "acceptance", "do_not")
PLAN_KEYS = ("summary", "milestones", "modules", "contract", "risks")
# Looked for in the sections only (not in paths or the direction), and only as the markers
# people write: "a todo list" is a feature, "TODO:" is unfinished work.
PLACEHOLDER = re.compile(r"\b(TODO|TBD|FIXME|XXX)\b|\blorem ipsum\b|<fill[ -]in>")
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}\Z")
TREE_LIMIT = 400
CONTEXT_LIMIT = 12000
DIRECTION_LIMIT = 4000


class PlanError(Exception):
    """Planning cannot go on; the message says why. Nothing was written."""


class PlanInvalid(PlanError):
    """Every round's answer was invalid; ``problems`` are the last round's."""

    def __init__(self, rounds: int, problems: list[str]):
        super().__init__(f"the model's split was still invalid after {rounds} round(s):\n"
                         + "\n".join(f"  {p}" for p in problems))
        self.rounds, self.problems = rounds, problems


@dataclass
class Settings:
    rounds: int = 3
    max_specs: int = 15
    min_estimate_s: int = 300
    max_estimate_s: int = 900
    template: Path = TEMPLATES / f"{PROMPT_VERSION}.md.j2"


@dataclass
class Plan:
    specs: dict[str, str]                 # file name -> spec file text
    plan_text: str                        # the execution plan (markdown, Mermaid DAG)
    model: str
    rounds: int
    problems_by_round: list[list[str]] = field(default_factory=list)
    task_ids: list[str] = field(default_factory=list)


# -- the direction ------------------------------------------------------------------------

def read_direction(text: str | None, path: str | None) -> str:
    """The direction from ``-e direction`` or a file (e.g. ``inputs/directions/<date>.md``)."""
    if text and path:
        raise PlanError("give the direction either as text (direction) or as a file (direction_file), not both")
    if path:
        file = Path(path).expanduser()
        if not file.is_absolute():
            file = REPO_ROOT / file
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise PlanError(f"direction_file {path}: cannot be read ({exc})") from None
    text = (text or "").strip()
    if not text:
        raise PlanError("no direction: -e direction='...' or -e direction_file=inputs/directions/<date>.md")
    if len(text) > DIRECTION_LIMIT:
        raise PlanError(f"the direction is {len(text)} characters; at most {DIRECTION_LIMIT} (a direction is a few "
                        "lines, the plan is the model's)")
    return text


# -- the prompt -----------------------------------------------------------------------------

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


# -- the answer -----------------------------------------------------------------------------

def parse_answer(text: str) -> dict:
    """The model's text -> ``{"plan": {...}, "specs": [...]}``; :class:`ValueError` says what is wrong."""
    whole = (text or "").strip()
    # The answer, or the first fenced block that holds a plan and specs (prose may show a small example first).
    candidates = [block.strip() for block in re.findall(r"```(?:json|yaml|yml)?[ \t]*\n(.*?)```", whole, re.S)]
    loaded = [_load(body) for body in [*candidates, whole]]
    mappings = [d for d in loaded if isinstance(d, dict)]
    data: Any = next((d for d in mappings if "specs" in d and "plan" in d), None) or next(
        (d for d in mappings if "specs" in d or "plan" in d), None) or (mappings[0] if mappings else None)
    if not isinstance(data, dict):
        raise ValueError("the answer is not one JSON object (nor YAML mapping) with keys plan and specs: "
                         f"{(text or '').strip()[:200]!r}")
    problems = []
    if not isinstance(data.get("specs"), list) or not data["specs"]:
        problems.append("specs: must be a non-empty list of spec objects")
    if not isinstance(data.get("plan"), dict):
        problems.append("plan: must be an object with " + ", ".join(PLAN_KEYS))
    else:
        missing = [k for k in ("milestones", "modules", "contract", "risks") if not data["plan"].get(k)]
        if missing:
            problems.append(f"plan: {', '.join(missing)} missing or empty")
    if problems:
        raise ValueError("; ".join(problems))
    return data


def _load(body: str) -> Any:
    start, end = body.find("{"), body.rfind("}")
    if start >= 0 and end > start:
        try:
            return json.loads(body[start:end + 1])
        except ValueError:
            pass
    try:
        return yaml.safe_load(body)
    except yaml.YAMLError:
        return None


def _listing(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "\n".join(f"- {str(v).strip()}" for v in value if str(v).strip())
    return str(value or "").strip()


def render_spec(project: str, item: Any, index: int, direction: str, model: str) -> tuple[str, str, list[str]]:
    """One spec object -> (file name, spec file text, problems the validator cannot see)."""
    where = f"specs[{index}]"
    if not isinstance(item, Mapping):
        return "", "", [f"{where}: must be an object with {', '.join(SPEC_KEYS)}"]
    problems = [f"{where}.{k}: is not a spec field (fields: {', '.join(SPEC_KEYS)})"
                for k in sorted(map(str, item)) if k not in SPEC_KEYS]
    task_id = str(item.get("task_id") or "")
    if not SAFE_NAME.match(task_id):
        return "", "", problems + [f"{where}.task_id: {task_id!r} must be letters, digits, '.', '_' or '-' "
                                   "(it names the file and the branch)"]
    front = {"task_id": task_id, "project": project}
    for key in ("title", "priority", "depends_on", "modifies", "executor", "estimate", "timeout", "verify"):
        if item.get(key) not in (None, ""):
            front[key] = item[key]
    if isinstance(front.get("title"), str):
        front["title"] = " ".join(front["title"].split())[:200]  # one line: it labels the graph and the table
    front["direction"] = " ".join(direction.split())[:300]
    front["model"] = model
    sections = [("Goal", item.get("goal")), ("Constraints", item.get("constraints")),
                ("Acceptance criteria", item.get("acceptance")), ("Do not", item.get("do_not"))]
    body = "".join(f"\n## {title}\n\n{_listing(value)}\n" for title, value in sections if _listing(value))
    for title, value in sections:
        if title != "Constraints" and not _listing(value):
            problems.append(f"{task_id}: section {title} is empty")
    text = "---\n" + yaml.safe_dump(front, sort_keys=False, allow_unicode=True, default_flow_style=None) + "---\n" + body
    found = PLACEHOLDER.search(body)
    if found:
        problems.append(f"{task_id}: contains the placeholder {found.group(0)!r}; write the real content")
    return f"{task_id}.md", text, problems


# -- validation of a whole split ------------------------------------------------------------------

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
    return _check(specs_root, project, rendered, executors, default_executor, settings, approving)[0]


def _check(specs_root: Path, project: str, rendered: Mapping[str, str], executors: Iterable[str] | None,
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


def _shown(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def mermaid(specs: Mapping[str, Any]) -> str:
    """A Mermaid flowchart of ``specs`` (task id -> Spec): dependencies point at their dependents."""
    lines = ["```mermaid", "graph TD"]
    node = {tid: f"n{i}" for i, tid in enumerate(sorted(specs))}
    for tid in sorted(specs):
        title = str(specs[tid].front_matter.get("title") or "").replace('"', "'")
        lines.append(f'  {node[tid]}["{tid}' + (f": {title[:60]}" if title else "") + '"]')
    for tid in sorted(specs):
        for dep in specs[tid].depends_on:
            if dep in node:
                lines.append(f"  {node[dep]} --> {node[tid]}")
    lines.append("```")
    return "\n".join(lines)


def _section(value: Any) -> str:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, list):
        out = []
        for entry in value:
            if isinstance(entry, Mapping):
                name = entry.get("name") or entry.get("title") or ""
                rest = {k: v for k, v in entry.items() if k not in ("name", "title")}
                detail = "\n".join(f"  - {k}: {v}" if not isinstance(v, (dict, list)) else
                                   f"  - {k}:\n\n    ```json\n" + "\n".join(
                                       "    " + line for line in json.dumps(v, indent=2, ensure_ascii=False)
                                       .splitlines()) + "\n    ```" for k, v in rest.items())
                out.append(f"- **{name}**" + (f"\n{detail}" if detail else ""))
            else:
                out.append(f"- {entry}")
        return "\n".join(out)
    return json.dumps(value, indent=2, ensure_ascii=False)


def plan_document(data: dict, direction: str, model: str, rounds: int, project: str, specs: Mapping[str, Any],
                  stamp: str, template: Path = TEMPLATES / f"{PROMPT_VERSION}.md.j2") -> str:
    plan = data["plan"]
    rows = "\n".join(f"| {tid} | {str(s.front_matter.get('title') or '').replace('|', '/')} | "
                     f"{', '.join(s.depends_on) or '-'} | {', '.join(s.modifies)} | "
                     f"{s.front_matter.get('estimate', '-')} |" for tid, s in sorted(specs.items()))
    return (f"# Execution plan: {project}\n\n"
            f"- direction: {' '.join(direction.split())}\n- model: {model}\n"
            f"- prompt: {_shown(template)}\n- planned: {stamp}\n- rounds: {rounds}\n\n"
            + (f"{str(plan.get('summary')).strip()}\n\n" if plan.get("summary") else "")
            + f"## Milestones\n\n{_section(plan.get('milestones'))}\n\n"
            f"## Module boundaries\n\n{_section(plan.get('modules'))}\n\n"
            f"## Shared contract\n\n{_section(plan.get('contract'))}\n\n"
            f"## Risks\n\n{_section(plan.get('risks'))}\n\n"
            f"## Dependency graph\n\n{mermaid(specs)}\n\n"
            f"## Specs\n\n| id | title | depends on | modifies | estimate |\n|---|---|---|---|---|\n{rows}\n")


# -- the loop -------------------------------------------------------------------------------------

def make_plan(endpoint: chat.Endpoint, specs_root: Path, project: str, direction: str, settings: Settings,
              executors: Iterable[str] | None = None, default_executor: str | None = None,
              ask: Callable[[chat.Endpoint, Sequence[Mapping[str, str]]], str] = chat.ask,
              log: Callable[[str], None] = lambda _text: None) -> Plan:
    """Ask, check, repair; -> a valid :class:`Plan`. :class:`PlanInvalid` or :class:`chat.ChatUnavailable` else."""
    executors = None if executors is None else sorted(executors)
    messages = [{"role": "system", "content": SYSTEM},
                {"role": "user", "content": prompt(settings, project, direction, specs_root, default_executor,
                                                   executors)}]
    history: list[list[str]] = []
    for round_no in range(1, settings.rounds + 1):
        text = ask(endpoint, messages)
        problems, rendered, data = [], {}, None
        try:
            data = parse_answer(text)
        except ValueError as exc:
            problems = [str(exc)]
        if data is not None:
            if len(data["specs"]) > settings.max_specs:
                problems.append(f"specs: {len(data['specs'])} specs; at most {settings.max_specs} per direction")
            for index, item in enumerate(data["specs"]):
                name, spec_text, own = render_spec(project, item, index, direction, endpoint.model)
                problems += own
                if name in rendered:
                    problems.append(f"specs[{index}].task_id: {name[:-3]!r} is used twice")
                elif name:
                    rendered[name] = spec_text
            if not problems:
                problems, final = _check(specs_root, project, rendered, executors, default_executor, settings)
        history.append(problems)
        log(f"round {round_no}: " + ("valid" if not problems else f"{len(problems)} problem(s)"))
        if not problems:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S %z")
            return Plan(rendered, plan_document(data, direction, endpoint.model, round_no, project, final, stamp,
                                                settings.template),
                        endpoint.model, round_no, history, sorted(final))
        messages += [{"role": "assistant", "content": text},
                     {"role": "user", "content": "Your split is not valid. Fix every problem below and answer again "
                      "with the whole corrected JSON object (all specs, not only the changed ones):\n"
                      + "\n".join(f"- {p}" for p in problems)}]
    raise PlanInvalid(settings.rounds, history[-1])


# -- landing and approval -------------------------------------------------------------------------

def land(specs_root: Path, project: str, plan: Plan, into: str = "pending") -> list[Path]:
    """Write the specs and the plan; all or nothing, never over an existing file."""
    folder = specs_root / project / ("pending" if into == "pending" else "")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    files = dict(plan.specs)
    # '_' keeps the plan out of validation, in the project folder as in pending/.
    files[f"_plan-{stamp}.md"] = plan.plan_text
    taken = [name for name in files if (folder / name).exists()
             or (into == "pending" and (specs_root / project / name).exists())]
    if taken:
        raise PlanError(f"specs/{project}/{'pending/' if into == 'pending' else ''}: {', '.join(sorted(taken))} "
                        "exist already; nothing was written")
    moved: list[Path] = []
    staging = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".plan-", dir=folder))
        for name, text in files.items():
            (staging / name).write_text(text, encoding="utf-8")
        for name in files:
            target = folder / name
            os.link(staging / name, target)  # fails, rather than replaces, if a file appeared meanwhile
            moved.append(target)
    except OSError as exc:
        for path in moved:
            path.unlink(missing_ok=True)
        raise PlanError(f"specs/{project}: could not write the plan ({exc}); nothing was written") from None
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    return moved


def approve(specs_root: Path, project: str, which: Sequence[str] | str, executors: Iterable[str] | None = None,
            default_executor: str | None = None, dry_run: bool = False) -> list[str]:
    """Move approved pending specs into the project once the project with them is valid; -> task ids."""
    pending = specs_root / project / "pending"
    available = {p.name[:-3]: p for p in sorted(pending.glob("*.md")) if not p.name.startswith(("_", "."))}
    if not available:
        raise PlanError(f"specs/{project}/pending/ holds no spec to approve (plan.yml writes them there)")
    wanted = sorted(available) if which in ("all", ["all"]) else [str(w).strip() for w in which if str(w).strip()]
    unknown = [w for w in wanted if w not in available]
    if unknown or not wanted:
        raise PlanError(f"not pending in specs/{project}/pending/: {', '.join(unknown) or '(none named)'}; pending: "
                        + ", ".join(sorted(available)))
    rendered = {available[w].name: available[w].read_text(encoding="utf-8") for w in wanted}
    problems = check(specs_root, project, rendered, executors, default_executor,
                     Settings(min_estimate_s=0, max_estimate_s=10 ** 9), approving=True)
    problems = [p for p in problems if "field 'estimate' is missing" not in p]
    if problems:
        raise PlanError("the project with these specs is not valid; nothing was moved:\n"
                        + "\n".join(f"  {p}" for p in problems))
    if dry_run:
        return wanted
    moved: list[Path] = []
    try:
        for name in rendered:  # link all first: a name taken meanwhile stops the whole batch
            os.link(pending / name, specs_root / project / name)
            moved.append(specs_root / project / name)
    except OSError as exc:
        for path in moved:
            path.unlink(missing_ok=True)
        raise PlanError(f"specs/{project}: could not move the specs ({exc}); nothing was moved") from None
    for name in rendered:
        (pending / name).unlink()
    return wanted
