# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One attempt of a spec, controller side: what to send to the node, what to do with the result.

:func:`prepare` gathers everything the node-side runner needs (``job.json``, the
prompt, the secrets, a replay recording) from the project, the state store and the
repository. :func:`collect` takes the files brought back from the node's run directory,
imports the spec's branch and records the outcome; only then is the attempt a success.
No Ansible here: the ``specfleet_attempt`` action plugin does the SSH.
"""
from __future__ import annotations

import json
import re
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from specfleet.attempt import executors as executor_defs
from specfleet.attempt import prompt as prompt_builder
from specfleet.attempt import workspace
from specfleet.dispatch import jobs
from specfleet.dispatch.leases import LeaseBook
from specfleet.model.durations import parse_duration
from specfleet.model.project import ProjectConfig, load_project
from specfleet.model.spec import parse_sections
from specfleet.node.runner import FILES, Redactor
from specfleet.node.runner import sum_usage as runner_sum_usage
from specfleet.ops.controller import REPO_ROOT, resolve_db, resolve_specs_root
from specfleet.store.core import Store

# The run directory's files brought back (an ERE, also used by grep on the node).
ARTIFACT_NAMES = (r"^(status\.json|job\.json|prompt\.md|changes\.patch|result\.bundle|output\.log|heartbeat"
                  r"|round-[0-9]+\.(prompt\.md|verify\.log|gates\.json|agent\.[A-Za-z0-9_.-]+\.log))$")
RUNNER_FILES = FILES   # what the action plugin ships to the node with each attempt
ARTIFACT_PATTERNS = re.compile(ARTIFACT_NAMES)
LESSONS_IN_PROMPT = 20


class AttemptError(Exception):
    pass


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


def load_config(project: str, specs_root: str | None) -> ProjectConfig:
    root = resolve_specs_root(specs_root)
    config, problems = load_project(root / project, project, f"specs/{project}/project.yml")
    if config is None:
        raise AttemptError("; ".join(map(str, problems)))
    return config


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
    try:
        checked = executor_defs.chain(executors, executor_name)
        chain, secrets, notes = executor_defs.runner_chain(checked, row.timeout_s, lookup,
                                                           node_facts.get("credentials") or ())
    except executor_defs.ExecutorError as exc:
        raise AttemptError(str(exc)) from exc
    recording = None
    if chain[0]["kind"] == "replay":
        folder = Path(checked[0]["recordings"].replace("{project}", project))
        folder = folder if folder.is_absolute() else REPO_ROOT / folder
        path = folder / f"{task_id}.patch"
        if not path.is_file():
            raise AttemptError(f"executor {chain[0]['name']} replays recorded sessions, but there is no recording "
                               f"{path} for {task_id}")
        recording = path.read_bytes()
    remote = config.transport == "remote"
    try:
        start = workspace.resolve_start(config.repository, remote, project, config.base_branch, row.depends_on)
    except workspace.GitError as exc:
        raise AttemptError(str(exc)) from exc

    work = workspace.on_node(jobs.workspace_dir(root, project, task_id, attempt, run_id), home)
    environment = (f"- node: {node}; workspace: {work} (a fresh clone; stay inside it)\n"
                   f"- verify command (run at the workspace root after you finish): `{row.verify}`\n"
                   f"- files you may change (modifies): {', '.join(row.modifies) or '(none listed)'}"
                   + (f"; test paths: {', '.join(config.test_paths)}" if config.test_paths else "")
                   + ("\n" + node_environment.strip() if node_environment.strip() else ""))
    built = prompt_builder.build(
        spec_text, task_id,
        instructions=_context_file(config, start.base, ("CLAUDE.md", "AGENTS.md")),
        memory=memory,
        shared_context=_context_file(config, start.base, tuple(n for n in config.context_files
                                                                if n not in ("CLAUDE.md", "AGENTS.md"))),
        siblings=siblings, environment=environment, budget=budget)
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


def unpack(archive: Path, folder: Path) -> list[str]:
    """Extract the regular files of ``archive`` whose names are artifact names; -> their names.

    The archive comes from a node: links, directories, paths and unexpected names are skipped.
    """
    names = []
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            if not member.isfile() or not ARTIFACT_PATTERNS.match(member.name):
                continue
            source = tar.extractfile(member)
            (folder / member.name).write_bytes(source.read() if source else b"")
            names.append(member.name)
    archive.unlink()
    return names


def scrub(folder: Path, secrets: list[str]) -> None:
    """Defence in depth: replace secret values in every text file brought back."""
    values = Redactor(secrets).values
    if not values:
        return
    for path in folder.iterdir():
        if path.suffix == ".bundle" or not path.is_file():
            continue
        data = path.read_bytes()
        cleaned = data
        for value in values:
            cleaned = cleaned.replace(value.encode(), b"***")
        if cleaned != data:
            path.write_bytes(cleaned)


def collect(*, db: str | None, specs_root: str | None, project: str, task_id: str, attempt: int, run_id: str,
            folder: Path, leftover: bool = False) -> dict:
    """Import the result in ``folder`` (the run directory's files); -> ``{"ok", "msg", ...}``.

    ``leftover``: the attempt is a dead run's job collected by ``collect.yml``; the spec moves
    on here (``completed``, or a spec failure), and ``state`` says where it went.
    """
    config = load_config(project, specs_root)
    status_path = folder / "status.json"
    try:
        status = json.loads(status_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        status = {}
    if not isinstance(status, dict) or not status:
        status = {"state": "missing", "error": "the runner left no readable status.json"}
    rounds = status.get("rounds") or []
    executor = status.get("executor") or (rounds[-1].get("executor") if rounds else None)
    branch = workspace.spec_branch(project, task_id)
    outcome: dict[str, Any] = {"ok": False, "state": status.get("state"), "phase": status.get("phase"),
                               "executor": executor, "rounds": len(rounds), "artifacts": str(folder),
                               "branch": branch, "commit": status.get("commit"),
                               "files_changed": status.get("files_changed", []),
                               "usage": status.get("usage") if isinstance(status.get("usage"), dict) else
                               runner_sum_usage(rounds if isinstance(rounds, list) else []),
                               "tries": [dict(t, round=r.get("round")) for r in rounds if isinstance(r, dict)
                                         for t in (r.get("tries") or []) if isinstance(t, dict)]}
    if not status.get("final"):
        outcome["msg"] = (f"the runner's status is not final (state {status.get('state')}, phase "
                          f"{status.get('phase')}): the attempt did not finish cleanly")
    elif status.get("state") != "succeeded":
        outcome["msg"] = status.get("error") or f"the attempt ended {status.get('state')}"
        outcome["infrastructure"] = bool(status.get("infrastructure"))
    elif not status.get("commit"):
        outcome["msg"] = "the runner reported success without a commit"
    else:
        try:
            if config.transport == "remote":
                workspace.check_pushed(config.repository, branch, status["commit"])
            else:
                bundle = folder / "result.bundle"
                if not bundle.is_file():
                    raise workspace.GitError("result.bundle was not brought back from the node")
                workspace.import_result(config.repository, bundle, branch, status["commit"])
            outcome.update(ok=True, msg=f"{task_id}: {len(outcome['files_changed'])} files changed by {executor} in "
                                        f"{len(rounds)} round(s); branch {branch} at {status['commit'][:12]}")
        except workspace.GitError as exc:
            outcome["msg"] = f"the result could not be brought back: {exc}"
    with Store(resolve_db(db)) as store:
        store.record_attempt(project, task_id, attempt, executor=executor, branch=branch if outcome["ok"] else None,
                             commit_sha=status.get("commit") if outcome["ok"] else None, rounds=len(rounds),
                             artifacts=str(folder),
                             result={k: outcome[k] for k in ("ok", "state", "phase", "msg", "files_changed")},
                             usage=outcome["usage"], tries=outcome["tries"])
        if not outcome["ok"] and not outcome.get("infrastructure"):  # the node's fault teaches the spec nothing
            store.add_lesson(project, task_id, attempt, "failure", _lesson(outcome["msg"], rounds))
        if leftover:
            row = store.db.execute("SELECT id FROM attempts WHERE project = ? AND task_id = ? AND number = ?",
                                   (project, task_id, attempt)).fetchone()
            state = LeaseBook(store).collect_leftover(row["id"], outcome["ok"], None if outcome["ok"] else
                                                      outcome["msg"]) if row else None
            outcome["state"] = state.value if state else "unchanged: a dispatch run adopted it meanwhile"
    return outcome


def _lesson(message: str, rounds: list[dict]) -> str:
    problems = [p.splitlines()[0] for r in rounds for p in (r.get("problems") or [])]
    seen = list(dict.fromkeys(problems))[-5:]
    text = message.strip().splitlines()[0] if message.strip() else "failed"
    if seen:
        text += " | round problems: " + "; ".join(seen)
    return text[:1500]
