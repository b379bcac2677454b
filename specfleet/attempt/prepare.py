# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Preparing one attempt, controller side: everything the node-side runner needs.

:func:`prepare` gathers ``job.json``, the prompt, the secrets and a replay recording from
the project, the state store and the repository. :data:`RUNNER_FILES` is what ships with
them (the node package's own list, ``specfleet/node/shipped.txt``).
No Ansible here: the ``specfleet_attempt`` action plugin does the SSH.
"""
from __future__ import annotations

import io
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from specfleet.attempt import executors as executor_defs
from specfleet.attempt import prompt as prompt_builder
from specfleet.attempt import workspace
from specfleet.attempt.config import AttemptError, load_config
from specfleet.dispatch import jobs
from specfleet.model.durations import parse_duration
from specfleet.model.project import ProjectConfig
from specfleet.model.spec import parse_sections
from specfleet.node import DIR as NODE_DIR
from specfleet.node.runfiles import FILES
from specfleet.ops.controller import REPO_ROOT, resolve_db
from specfleet.store.core import Store

RUNNER_FILES = FILES   # what the action plugin ships to the node with each attempt
RUNNER_ARCHIVE = "runner.tar"


def runner_archive() -> bytes:
    """:data:`RUNNER_FILES` as one uncompressed tar: one transfer per attempt, however many files.

    The launch command unpacks it in the run directory (``tar`` is in every Debian base
    system). Members are plain files named without a folder, mode 0644, owned by nobody in
    particular (unpacked with ``--no-same-owner``).
    """
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name in RUNNER_FILES:
            data = (NODE_DIR / name).read_bytes()
            member = tarfile.TarInfo(name)
            member.size, member.mode, member.mtime = len(data), 0o644, int((NODE_DIR / name).stat().st_mtime)
            archive.addfile(member, io.BytesIO(data))
    return buffer.getvalue()
LESSONS_IN_PROMPT = 20


@dataclass
class Prepared:
    job: dict
    prompt: str
    secrets: dict
    recording: bytes | None
    start: workspace.Start
    config: ProjectConfig
    notes: list[str] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)


def _context_file(config: ProjectConfig, base: str, names: tuple[str, ...]) -> str:
    """The first of ``names`` in the spec folder, else in the repository at the base commit."""
    for name in names:
        local = config.folder / name
        if local.is_file():
            return local.read_text(encoding="utf-8", errors="replace")
        text = workspace.read_at(config.repository, base, name)
        if text:
            return text
    return ""


def _spec_text(store: Store, project: str, task_id: str, revision: int) -> tuple[str, dict]:
    found = store.revision_text(project, task_id, revision)
    if found is None:
        raise AttemptError(f"{project}/{task_id}: revision {revision} is not in the state store")
    front_matter, body = found
    dumped = yaml.safe_dump(front_matter, sort_keys=False, allow_unicode=True, default_flow_style=None)
    return f"---\n{dumped}---\n{body}", front_matter


def _siblings(store: Store, project: str, task_id: str) -> list[str]:
    lines = []
    for row in store.specs(project):
        if row.task_id == task_id:
            continue
        found = store.revision_text(project, row.task_id, row.revision)
        goal = ""
        if found:
            goal = parse_sections(found[1])[0].get("goal", "").strip().splitlines()
            goal = goal[0][:200] if goal else ""
        lines.append(f"- {row.task_id} ({row.state.value}): {goal}\n  modifies: {', '.join(row.modifies) or '-'}")
    return lines


def _title(front_matter: dict, spec_text: str) -> str:
    """The spec's title, else the first line of its goal: the subject of the result's commit."""
    title = str(front_matter.get("title") or "").strip()
    if not title:
        goal = parse_sections(spec_text.split("\n---\n", 1)[-1])[0].get("goal", "").strip()
        title = goal.splitlines()[0] if goal else ""
    return title.lstrip("#-* ").strip()[:100]


def _memory(store: Store, project: str, task_id: str) -> list[str]:
    lessons = store.lessons(project, limit=200)
    own = [lesson for lesson in lessons if lesson["task_id"] == task_id]
    other = [lesson for lesson in lessons if lesson["task_id"] != task_id]
    out = []
    for lesson in (own + other)[:LESSONS_IN_PROMPT]:
        who = "this spec" if lesson["task_id"] == task_id else lesson["task_id"] or "project"
        out.append(f"- [{lesson['kind']}, {who}, attempt {lesson['attempt']}] {lesson['text'].strip()[:1500]}")
    return out


def prepare(*, db: str | None, specs_root: str | None, project: str, task_id: str, attempt: int, run_id: str,
            node: str, root: str, home: str, executors: Any, lookup: Callable[[str], Any],
            node_environment: str = "", budget: int = prompt_builder.DEFAULT_BUDGET,
            identity: dict | None = None, executor: str | None = None, agent_user: str | None = None) -> Prepared:
    """Everything the node needs for one attempt; ``executor`` overrides the spec's for this run."""
    config = load_config(project, specs_root)
    with Store(resolve_db(db)) as store:
        row = store.spec(project, task_id)
        if row is None:
            raise AttemptError(f"{project}/{task_id} is not in the state store")
        spec_text, front_matter = _spec_text(store, project, task_id, row.revision)
        siblings = _siblings(store, project, task_id)
        memory = _memory(store, project, task_id)
        node_facts = next(iter(store.node_status(node)), {}).get("facts", {})
    executor_name = executor or row.executor
    if not executor_name:
        raise AttemptError(f"{task_id}: no executor (spec, project.yml or specfleet_default_executor)")
    if not row.verify:
        raise AttemptError(f"{task_id}: no verify command")
    checked, chain, secrets, notes = _executor_chain(executors, executor_name, row.timeout_s, lookup, node_facts)
    recording = _recording(checked, chain, project, task_id)
    remote = config.transport == "remote"
    try:
        start = workspace.resolve_start(config.repository, remote, project, config.base_branch, row.depends_on)
    except workspace.GitError as exc:
        raise AttemptError(str(exc)) from exc
    work = workspace.on_node(jobs.workspace_dir(root, project, task_id, attempt, run_id), home)
    built = _prompt(config, row, start, spec_text, task_id, memory, siblings,
                    _environment(node, work, row, config, node_environment), budget)
    job = {
        "project": project, "task_id": task_id, "attempt": attempt, "run_id": run_id, "node": node,
        "title": _title(front_matter, spec_text),
        "mirror": workspace.on_node(workspace.mirror_dir(root, project), home), "workspace": work,
        "branch": workspace.spec_branch(project, task_id), "base": start.base, "base_ref": start.base_ref,
        "verify": row.verify, "verify_timeout_s": parse_duration(config.verify_timeout), "retries": row.retries,
        "modifies": list(row.modifies), "test_paths": list(config.test_paths), "exclude": list(config.exclude),
        "require_tests": bool(config.require_tests), "executors": chain, "attempt_timeout_s": row.timeout_s,
        "credentials_file": node_facts.get("credentials_file") or workspace.on_node(f"{root}/credentials.env", home),
        "identity": identity or {"name": "specfleet", "email": "specfleet@localhost"},
        "agent_user": agent_user,
    }
    if remote:
        job["remote_url"] = config.repository
        job["remote_refs"] = list(start.refs)
    return Prepared(job, built.text, secrets, recording, start, config, notes, built.left_out)


def _executor_chain(executors: Any, name: str, timeout_s: int, lookup: Callable[[str], Any],
                    node_facts: dict) -> tuple[list[dict], list[dict], dict, list[str]]:
    """The checked chain, the chain as the runner gets it, the secrets to ship, and notes."""
    try:
        checked = executor_defs.chain(executors, name)
        chain, secrets, notes = executor_defs.runner_chain(checked, timeout_s, lookup,
                                                           node_facts.get("credentials") or ())
    except executor_defs.ExecutorError as exc:
        raise AttemptError(str(exc)) from exc
    return checked, chain, secrets, notes


def _recording(checked: list[dict], chain: list[dict], project: str, task_id: str) -> bytes | None:
    """The recorded session a ``replay`` executor applies (None for any other executor)."""
    if chain[0]["kind"] != "replay":
        return None
    folder = Path(checked[0]["recordings"].replace("{project}", project))
    folder = folder if folder.is_absolute() else REPO_ROOT / folder
    path = folder / f"{task_id}.patch"
    if not path.is_file():
        raise AttemptError(f"executor {chain[0]['name']} replays recorded sessions, but there is no recording "
                           f"{path} for {task_id}")
    return path.read_bytes()


def _environment(node: str, work: str, row: Any, config: ProjectConfig, node_environment: str) -> str:
    """The prompt's environment layer: where the agent works, what it may change, how it is checked."""
    return (f"- node: {node}; workspace: {work} (a fresh clone; stay inside it)\n"
            f"- verify command (run at the workspace root after you finish): `{row.verify}`\n"
            f"- files you may change (modifies): {', '.join(row.modifies) or '(none listed)'}"
            + (f"; test paths: {', '.join(config.test_paths)}" if config.test_paths else "")
            + ("\n" + node_environment.strip() if node_environment.strip() else ""))


def _prompt(config: ProjectConfig, row: Any, start: workspace.Start, spec_text: str, task_id: str,
            memory: list[str], siblings: list[str], environment: str, budget: int) -> prompt_builder.Prompt:
    return prompt_builder.build(
        spec_text, task_id,
        instructions=_context_file(config, start.base, ("CLAUDE.md", "AGENTS.md")),
        memory=memory,
        shared_context=_context_file(config, start.base, tuple(n for n in config.context_files
                                                                if n not in ("CLAUDE.md", "AGENTS.md"))),
        siblings=siblings, environment=environment, budget=budget)
