# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The spec model: one markdown file with YAML front matter, parsed and checked once.

Everything downstream (store, scheduler, prompt builder) works on :class:`Spec`, whose
paths are normalised, durations are seconds and defaults are applied, so no other
place re-parses the file or re-interprets a field.
"""
from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from specfleet.model import frontmatter
from specfleet.model.durations import parse_duration
from specfleet.model.problems import Problem
from specfleet.node.paths import normalise_modifies

from .schema import load_schema, schema_problems

# \Z, not $: "$" also matches before a trailing newline, and "S01\n" once passed as an id
# (dispatch then made a run directory with a line break in its name). Use fullmatch.
TASK_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
TASK_ID_RULE = "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
# Ids become Ansible host names in the dispatch play and git branch names
# (specfleet/<project>/<id>), so these would mean something else there. Compared
# lower-cased, like duplicate ids.
RESERVED_IDS = {
    "localhost": "is Ansible's implicit controller host: the spec would run on the controller",
    "127.0.0.1": "is Ansible's implicit controller host: the spec would run on the controller",
    "all": "is Ansible's group of every host",
    "ungrouped": "is Ansible's group of hosts in no other group",
    "specfleet_nodes": "is the inventory group of worker nodes",
    "specfleet_specs": "is the group the dispatch play adds spec hosts to",
    "specfleet_agent_specs": "is the group the dispatch play adds spec hosts to",
    "specfleet_job_specs": "is the group the dispatch play adds spec hosts to",
    "integration": "is the project's integration branch (specfleet/<project>/integration)",
}
SPEC_HOST_GROUPS = frozenset({"specfleet_specs", "specfleet_agent_specs", "specfleet_job_specs"})

# Heading aliases (compared lower-cased, without trailing colons) -> section key.
SECTION_ALIASES = {
    "goal": ("目标", "goal", "goals", "objective"),
    "constraints": ("约束", "constraints", "constraint"),
    "acceptance": ("验收标准", "验收", "acceptance criteria", "acceptance"),
    "do_not": ("不要做", "do not", "don't", "do not do", "do-not-do", "not to do"),
}
SECTION_NAMES = {"goal": "目标/Goal", "constraints": "约束/Constraints",
                 "acceptance": "验收标准/Acceptance criteria", "do_not": "不要做/Do not"}
REQUIRED_SECTIONS = ("goal", "acceptance")
_ALIAS_TO_KEY = {alias: key for key, aliases in SECTION_ALIASES.items() for alias in aliases}
_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$")
_FENCE = re.compile(r"^[ \t]*(```|~~~)")

DEFAULTS = {"priority": 2, "retries": 3, "estimate": 600, "timeout": 3600}


@dataclass(frozen=True)
class Spec:
    """A valid spec with every default applied (durations in seconds, paths normalised)."""

    project: str
    task_id: str
    path: str
    priority: int
    depends_on: tuple[str, ...]
    modifies: tuple[str, ...]
    executor: str | None
    estimate: int
    timeout: int
    verify: str | None
    retries: int
    sections: dict[str, str]
    body: str
    front_matter: dict[str, Any] = field(repr=False)
    content_hash: str = ""
    key_lines: dict[str, int] = field(default_factory=dict, repr=False, compare=False)  # for messages

    def as_dict(self) -> dict[str, Any]:
        return {
            "project": self.project, "task_id": self.task_id, "path": self.path,
            "priority": self.priority, "depends_on": list(self.depends_on),
            "modifies": list(self.modifies), "executor": self.executor,
            "estimate": self.estimate, "timeout": self.timeout, "verify": self.verify,
            "retries": self.retries, "content_hash": self.content_hash,
        }


def content_hash(front_matter: dict[str, Any], body: str) -> str:
    """Revision identity of a spec: its own front matter and body, not the project defaults.

    Trailing whitespace is ignored, so re-saving a file in another editor does not make
    a new revision (and does not re-queue finished work).
    """
    canonical_body = "\n".join(line.rstrip() for line in body.strip().splitlines())
    payload = json.dumps(front_matter, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256((payload + "\n\x1e\n" + canonical_body).encode()).hexdigest()


def parse_sections(body: str) -> tuple[dict[str, str], list[tuple[str, int]], list[str]]:
    """Split the markdown body on headings outside code fences.

    Returns known sections by key, every heading with its body-relative line, and the
    keys seen more than once.
    """
    sections: dict[str, list[str]] = {}
    headings: list[tuple[str, int]] = []
    duplicates: list[str] = []
    current: str | None = None
    current_level = 0
    in_fence = False
    for number, line in enumerate(body.splitlines()):
        if _FENCE.match(line):
            in_fence = not in_fence
        match = None if in_fence else _HEADING.match(line)
        if match:
            level = len(match.group(1))
            title = match.group(2).strip().rstrip(":：").strip()
            headings.append((title, number))
            key = _ALIAS_TO_KEY.get(title.lower(), title)
            if current is None or level <= current_level or key in _ALIAS_TO_KEY.values():
                if key in sections:
                    duplicates.append(key)
                current, current_level = key, level
                sections.setdefault(key, [])
                continue
        if current is not None:
            sections[current].append(line)
    return {k: "\n".join(v).strip() for k, v in sections.items()}, headings, duplicates


def reserved_ids(inventory_groups: Mapping[str, Iterable[str]] | None = None) -> dict[str, str]:
    """Lower-cased names a task id must not take -> why, from Ansible's ``groups`` variable (group -> hosts)."""
    reserved = dict(RESERVED_IDS)
    groups = inventory_groups or {}
    # Hosts a dispatch play added for specs are the specs themselves, not a clash.
    spec_hosts = {str(h) for g in SPEC_HOST_GROUPS for h in groups.get(g) or ()}
    for group, hosts in sorted(groups.items()):
        reserved.setdefault(str(group).lower(), f"is the name of the inventory group {group}")
        for host in hosts or ():
            if str(host) not in spec_hosts:
                reserved.setdefault(str(host).lower(), f"is the name of the inventory host {host}")
    return reserved


def task_id_problem(task_id: str) -> str | None:
    """What is wrong with ``task_id`` as an id (and so a host and branch name), or ``None``."""
    if not TASK_ID.fullmatch(task_id):
        return f"{show(task_id)} has characters or a length that are not allowed"
    if ".." in task_id or task_id.endswith((".", ".lock")):
        return f"{show(task_id)} contains '..' or ends in '.' or '.lock', which git refuses in a branch name"
    return None


def show(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters: messages never render a whole hostile value."""
    if isinstance(value, (list, tuple, dict)) and len(value) > 8:
        return f"<{type(value).__name__} of {len(value)} items>"
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _unknown_key_problem(path: str, key: str, line: int | None, known: list[str]) -> Problem:
    close = difflib.get_close_matches(str(key), known, n=1)
    hint = f"did you mean '{close[0]}'?" if close else "known fields: " + ", ".join(known)
    return Problem(path, line, str(key), "is not a spec field", hint)


def parse_spec(path: str, text: str, project: str, defaults: dict[str, Any] | None = None,
               stem: str | None = None, executors: list[str] | None = None,
               reserved: Mapping[str, str] | None = None) -> tuple[Spec | None, list[Problem]]:
    """Parse one spec file's ``text``; return the spec, or ``None`` and every problem found.

    ``defaults`` are the project's (``project.yml``) values for fields a spec may omit;
    ``executors`` the names the inventory defines (``None``: not checked); ``reserved``
    the lower-cased names an id must not take, with why (default :data:`RESERVED_IDS`).

    Checks run in this order, each only on fields the schema left valid: the schema, the
    id, the project, ``modifies``, the durations, ``verify``, the executor, ``depends_on``,
    the sections.
    """
    reserved = RESERVED_IDS if reserved is None else reserved
    defaults = dict(DEFAULTS, **{k: v for k, v in (defaults or {}).items() if v is not None})
    try:
        doc = frontmatter.split(text)
    except frontmatter.FrontMatterError as exc:
        return None, [Problem(path, exc.line, exc.key, str(exc))]

    data = dict(doc.data)
    line_of = doc.key_lines.get
    if "task_id" not in data and stem is not None:
        data["task_id"] = stem
    problems = _task_id_problems(path, "task_id" in doc.data, data, line_of, _schema_problems(path, data, line_of),
                                 stem, reserved)
    task_id = data.get("task_id")
    bad_fields = {p.field for p in problems}
    if "project" in data and "project" not in bad_fields and data["project"] != project:
        problems.append(Problem(path, line_of("project"), "project",
                                f"is {show(data['project'])} but the spec is in the folder of project {project!r}",
                                f"write 'project: {project}' or move the file"))
    modifies = [] if "modifies" in bad_fields else _modifies(path, data, line_of, problems)
    durations = _durations(path, data, defaults, line_of, bad_fields, problems)
    verify = data.get("verify", defaults.get("verify"))
    executor = data.get("executor", defaults.get("executor"))
    _check_verify_and_executor(path, line_of, bad_fields, verify, executor, executors, problems)
    if "depends_on" not in bad_fields:
        _check_dependencies(path, data, line_of, task_id, problems)
    sections = _sections(path, doc.body, problems)

    if problems:
        return None, sorted(problems, key=Problem.sort_key)
    spec = Spec(
        project=project,
        task_id=task_id,
        path=path,
        priority=data.get("priority", defaults["priority"]),
        depends_on=tuple(data.get("depends_on", [])),
        modifies=tuple(modifies),
        executor=executor,
        estimate=durations["estimate"],
        timeout=durations["timeout"],
        verify=verify,
        retries=data.get("retries", defaults["retries"]),
        sections={k: v for k, v in sections.items() if k in SECTION_ALIASES},
        body=doc.body,
        front_matter=dict(doc.data),
        content_hash=content_hash(doc.data, doc.body),
        key_lines=dict(doc.key_lines),
    )
    return spec, []


LineOf = Callable[[str], int | None]


def _schema_problems(path: str, data: dict[str, Any], line_of: LineOf) -> list[Problem]:
    """Unknown fields (dropped from ``data``, with the closest known one suggested) and what the schema refuses."""
    schema = load_schema("spec")
    known = sorted(schema["properties"])
    problems = []
    for key in [k for k in data if k not in schema["properties"]]:
        problems.append(_unknown_key_problem(path, key, line_of(str(key)), known))
        del data[key]
    return problems + schema_problems(schema, data, path, line_of)


def _task_id_problems(path: str, written: bool, data: dict[str, Any], line_of: LineOf, problems: list[Problem],
                      stem: str | None, reserved: Mapping[str, str]) -> list[Problem]:
    """``problems`` with the id's own: its characters, a reserved name, or a file name that cannot be an id.

    ``written``: the spec writes its id (else it comes from the file name ``stem``). A wrong
    id taken from the file name is reported once, as a missing id, instead of the schema's
    complaints about the file name.
    """
    task_id = data.get("task_id")
    taken: Problem | None = None
    if isinstance(task_id, str) and not any(p.field == "task_id" for p in problems):
        wrong = task_id_problem(task_id)
        if wrong:
            problems.append(Problem(path, line_of("task_id"), "task_id", wrong, TASK_ID_RULE))
        elif task_id.lower() in reserved:
            source = "" if written else " (taken from the file name)"
            taken = Problem(path, line_of("task_id"), "task_id", f"{task_id!r}{source} {reserved[task_id.lower()]}",
                            "rename the spec: ids become host names in the dispatch play and branch names")
    if not written and any(p.field == "task_id" for p in problems):
        problems = [p for p in problems if p.field != "task_id"]
        problems.append(Problem(path, None, "task_id",
                                f"is missing and the file name {show(stem)} is not a valid task id",
                                f"add 'task_id:' with {TASK_ID_RULE}"))
    if taken:
        problems.append(taken)
    return problems


def _modifies(path: str, data: dict[str, Any], line_of: LineOf, problems: list[Problem]) -> list[str]:
    """The ``modifies`` entries normalised once, here; a bad or repeated entry goes to ``problems``."""
    modifies: list[str] = []
    for raw in data.get("modifies", []):
        try:
            normal = normalise_modifies(raw)
        except ValueError as exc:
            problems.append(Problem(path, line_of("modifies"), "modifies", f"entry {show(raw)} {exc}"))
            continue
        if normal in modifies:
            problems.append(Problem(path, line_of("modifies"), "modifies",
                                    f"entry {show(raw)} repeats {show(normal)}", "list each path once"))
        else:
            modifies.append(normal)
    return modifies


def _durations(path: str, data: dict[str, Any], defaults: dict[str, Any], line_of: LineOf, bad_fields: set,
               problems: list[Problem]) -> dict[str, int]:
    """``estimate`` and ``timeout`` in seconds (the spec's, else the project's); the timeout must cover the estimate."""
    durations: dict[str, int] = {}
    for key in ("estimate", "timeout"):
        if key in bad_fields:
            continue
        source = data.get(key, defaults[key])
        try:
            if isinstance(source, str) and len(source) > 32:  # no duration is that long; keep the message short
                raise ValueError(f"{show(source)} is not a duration; write e.g. 90s, 5m, 1h30m")
            durations[key] = parse_duration(source)
        except ValueError as exc:
            where = line_of(key) if key in data else None
            owner = "" if key in data else " (the project default in project.yml)"
            problems.append(Problem(path, where, key, f"{exc}{owner}"))
    if "estimate" in durations and "timeout" in durations and durations["timeout"] < durations["estimate"]:
        problems.append(Problem(path, line_of("timeout"), "timeout",
                                f"{data.get('timeout', defaults['timeout'])} is shorter than the estimate "
                                f"{data.get('estimate', defaults['estimate'])}",
                                "a timeout must leave room for the estimated work"))
    return durations


def _check_verify_and_executor(path: str, line_of: LineOf, bad_fields: set, verify: Any, executor: Any,
                               executors: list[str] | None, problems: list[Problem]) -> None:
    """A ``verify`` command and an executor the inventory defines, from the spec or its defaults."""
    if "verify" not in bad_fields and verify is None:
        problems.append(Problem(path, None, "verify", "is missing and project.yml sets no default verify",
                                "add 'verify: <command that proves the acceptance criteria>'"))
    if isinstance(verify, str) and "\x00" in verify:
        problems.append(Problem(path, line_of("verify"), "verify", "contains a NUL byte"))
    if "executor" not in bad_fields:
        if executor is None:
            problems.append(Problem(path, None, "executor",
                                    "is not set here, in project.yml or as specfleet_default_executor",
                                    "name one of the inventory's executors"))
        elif executors is not None and executor not in executors:
            problems.append(Problem(path, line_of("executor"), "executor",
                                    f"{show(executor)} is not defined in the inventory",
                                    "defined: " + ", ".join(executors)))


def _check_dependencies(path: str, data: dict[str, Any], line_of: LineOf, task_id: Any,
                        problems: list[Problem]) -> None:
    """Each dependency is a valid id and not the spec itself (cycles across files are the validator's)."""
    for dep in data.get("depends_on", []):
        if task_id_problem(dep):
            problems.append(Problem(path, line_of("depends_on"), "depends_on",
                                    f"entry {show(dep)} is not a valid task id", TASK_ID_RULE))
        elif dep == task_id:
            problems.append(Problem(path, line_of("depends_on"), "depends_on",
                                    f"dependency cycle: {task_id} -> {task_id}", "a spec cannot depend on itself"))


def _sections(path: str, body: str, problems: list[Problem]) -> dict[str, str]:
    """The body's sections; a repeated one, or a required one missing or empty, goes to ``problems``."""
    sections, _headings, duplicates = parse_sections(body)
    for key in sorted(set(duplicates) & set(SECTION_ALIASES)):
        problems.append(Problem(path, None, SECTION_NAMES[key],
                                "section appears more than once", "merge the two sections"))
    for key in REQUIRED_SECTIONS:
        name = SECTION_NAMES[key]
        if not sections.get(key):
            state = "is empty" if key in sections else "is missing"
            problems.append(Problem(path, None, name, f"section {state}",
                                    f"add a '## {name.split('/')[1]}' (or '## {name.split('/')[0]}') section with content"))
    return sections
