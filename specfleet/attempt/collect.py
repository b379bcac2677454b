# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Collecting one attempt, controller side: the files brought back, the node's verdict, the result.

:func:`unpack` and :func:`scrub` take the run directory's files off the archive the node
packed; :func:`collect` reads the runner's ``status.json``, imports the spec's branch and
records the outcome; only then is the attempt a success. How the node's status becomes a
result is decided in one place, :func:`judge_status`.
No Ansible here: the ``specfleet_attempt`` action plugin does the SSH.
"""
from __future__ import annotations

import json
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from specfleet.attempt import workspace
from specfleet.attempt.config import load_config
from specfleet.dispatch.leases import LeaseBook
from specfleet.node.credentials import Redactor
from specfleet.node.executor import sum_usage as runner_sum_usage
from specfleet.ops.controller import resolve_db
from specfleet.store.core import Store

# The run directory's files brought back (an ERE, also used by grep on the node).
ARTIFACT_NAMES = (r"^(status\.json|job\.json|prompt\.md|changes\.patch|result\.bundle|output\.log|heartbeat"
                  r"|round-[0-9]+\.(prompt\.md|verify\.log|gates\.json|agent\.[A-Za-z0-9_.-]+\.log))$")
ARTIFACT_PATTERNS = re.compile(ARTIFACT_NAMES)


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


def read_status(folder: Path) -> dict:
    """The runner's ``status.json`` in ``folder``; a missing or unreadable one is a ``missing`` state."""
    try:
        status = json.loads((folder / "status.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        status = {}
    if not isinstance(status, dict) or not status:
        status = {"state": "missing", "error": "the runner left no readable status.json"}
    return status


@dataclass(frozen=True)
class Verdict:
    """What the node's status says before the result is imported.

    ``importable``: the runner succeeded with a commit, and only the import can still fail.
    Otherwise ``msg`` says why the attempt failed and ``infrastructure`` whether the node,
    not the spec, is to blame (``None``: the status does not say, which counts as the spec's).
    """
    importable: bool
    msg: str | None = None
    infrastructure: bool | None = None


def judge_status(status: dict) -> Verdict:
    """The one place where the runner's final status becomes an attempt's verdict.

    A status that is not final means the runner did not finish cleanly (the spec's
    failure); a final state other than ``succeeded`` carries the runner's error and its
    ``infrastructure`` flag; a success without a commit is a failure.
    """
    if not status.get("final"):
        return Verdict(False, f"the runner's status is not final (state {status.get('state')}, phase "
                              f"{status.get('phase')}): the attempt did not finish cleanly")
    if status.get("state") != "succeeded":
        return Verdict(False, status.get("error") or f"the attempt ended {status.get('state')}",
                       bool(status.get("infrastructure")))
    if not status.get("commit"):
        return Verdict(False, "the runner reported success without a commit")
    return Verdict(True)


def _outcome(status: dict, folder: Path, branch: str) -> dict[str, Any]:
    """The result's fields every attempt has, whatever its verdict."""
    rounds = status.get("rounds") or []
    executor = status.get("executor") or (rounds[-1].get("executor") if rounds else None)
    return {"ok": False, "state": status.get("state"), "phase": status.get("phase"),
            "executor": executor, "rounds": len(rounds), "artifacts": str(folder),
            "branch": branch, "commit": status.get("commit"),
            "files_changed": status.get("files_changed", []),
            "usage": status.get("usage") if isinstance(status.get("usage"), dict) else
            runner_sum_usage(rounds if isinstance(rounds, list) else []),
            "tries": [dict(t, round=r.get("round")) for r in rounds if isinstance(r, dict)
                      for t in (r.get("tries") or []) if isinstance(t, dict)]}


def _bring_back(config: Any, folder: Path, branch: str, commit: str) -> None:
    """The result's branch into the controller's repository (remote: check the node's push)."""
    if config.transport == "remote":
        workspace.check_pushed(config.repository, branch, commit)
        return
    bundle = folder / "result.bundle"
    if not bundle.is_file():
        raise workspace.GitError("result.bundle was not brought back from the node")
    workspace.import_result(config.repository, bundle, branch, commit)


def collect(*, db: str | None, specs_root: str | None, project: str, task_id: str, attempt: int, run_id: str,
            folder: Path, leftover: bool = False) -> dict:
    """Import the result in ``folder`` (the run directory's files); -> ``{"ok", "msg", ...}``.

    ``leftover``: the attempt is a dead run's job collected by ``collect.yml``; the spec moves
    on here (``completed``, or a spec failure), and ``state`` says where it went.
    """
    config = load_config(project, specs_root)
    status = read_status(folder)
    branch = workspace.spec_branch(project, task_id)
    outcome = _outcome(status, folder, branch)
    verdict = judge_status(status)
    if not verdict.importable:
        outcome["msg"] = verdict.msg
        if verdict.infrastructure is not None:
            outcome["infrastructure"] = verdict.infrastructure
    else:
        try:
            _bring_back(config, folder, branch, status["commit"])
            outcome.update(ok=True, msg=f"{task_id}: {len(outcome['files_changed'])} files changed by "
                                        f"{outcome['executor']} in {outcome['rounds']} round(s); branch {branch} at "
                                        f"{status['commit'][:12]}")
        except workspace.GitError as exc:
            outcome["msg"] = f"the result could not be brought back: {exc}"
    _record(db, project, task_id, attempt, folder, status, outcome, leftover)
    return outcome


def _record(db: str | None, project: str, task_id: str, attempt: int, folder: Path, status: dict,
            outcome: dict, leftover: bool) -> None:
    """The attempt's result in the store, a lesson for a spec failure, and a leftover's next state."""
    rounds = status.get("rounds") or []
    with Store(resolve_db(db)) as store:
        store.record_attempt(project, task_id, attempt, executor=outcome["executor"],
                             branch=outcome["branch"] if outcome["ok"] else None,
                             commit_sha=status.get("commit") if outcome["ok"] else None, rounds=len(rounds),
                             artifacts=str(folder),
                             result={k: outcome[k] for k in ("ok", "state", "phase", "msg", "files_changed")},
                             usage=outcome["usage"], tries=outcome["tries"])
        if not outcome["ok"] and not outcome.get("infrastructure"):  # the node's fault teaches the spec nothing
            store.add_lesson(project, task_id, attempt, "failure", _lesson(outcome["msg"], rounds))
        if leftover:
            attempt_id = store.attempt_id(project, task_id, attempt)
            state = LeaseBook(store).collect_leftover(attempt_id, outcome["ok"], None if outcome["ok"] else
                                                      outcome["msg"]) if attempt_id is not None else None
            outcome["state"] = state.value if state else "unchanged: a dispatch run adopted it meanwhile"


def _lesson(message: str, rounds: list[dict]) -> str:
    problems = [p.splitlines()[0] for r in rounds for p in (r.get("problems") or [])]
    seen = list(dict.fromkeys(problems))[-5:]
    text = message.strip().splitlines()[0] if message.strip() else "failed"
    if seen:
        text += " | round problems: " + "; ".join(seen)
    return text[:1500]
