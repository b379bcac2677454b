# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The model's answer: read as one JSON object (or YAML mapping), and each spec object rendered as a spec file."""
from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import yaml

SPEC_KEYS = ("task_id", "title", "priority", "depends_on", "modifies", "executor", "estimate", "timeout", "verify",
             "goal", "constraints", "acceptance", "do_not")
PLAN_KEYS = ("summary", "milestones", "modules", "contract", "risks")
# Looked for in the sections only (not in paths or the direction), and only as the markers
# people write: "a todo list" is a feature, "TODO:" is unfinished work.
PLACEHOLDER = re.compile(r"\b(TODO|TBD|FIXME|XXX)\b|\blorem ipsum\b|<fill[ -]in>")
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}\Z")


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

