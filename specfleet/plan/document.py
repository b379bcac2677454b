# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The execution plan written beside the specs: milestones, modules, contract, risks, a Mermaid DAG and a table."""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from specfleet.ops.controller import REPO_ROOT
from specfleet.plan.base import PROMPT_VERSION, TEMPLATES


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

