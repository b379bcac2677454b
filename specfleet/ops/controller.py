# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller-side entry points shared by the action plugins, the CLI and the tests.

They turn loosely typed inputs (Ansible variables, command-line flags) into the core's
calls, so every front end validates and feeds a project the same way.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from specfleet.dispatch.leases import LeaseBook
from specfleet.model.settings import default_db_path
from specfleet.model.states import RunKind, SpecState
from specfleet.report import usage as spent
from specfleet.store.core import FeedResult, Store
from specfleet.validate.checks import ValidationReport, validate_project

# specfleet/ops/controller.py -> the repository (or AWX project) root.
REPO_ROOT = Path(__file__).resolve().parents[2]


def resolve_specs_root(value: str | None = None) -> Path:
    """``value``, else ``$SPECFLEET_SPECS``, else ``<repo>/specs``; relative to the repo root."""
    raw = value or os.environ.get("SPECFLEET_SPECS") or "specs"
    path = Path(os.path.expanduser(raw))
    return path if path.is_absolute() else REPO_ROOT / path


def resolve_db(value: str | None = None) -> Path:
    return Path(os.path.expanduser(value)) if value else default_db_path()


def executor_names(value: Mapping[str, Any] | Iterable[str] | None) -> list[str] | None:
    """Names from the inventory's ``specfleet_executors`` (a mapping name -> definition)."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        return sorted(str(k) for k in value)
    if isinstance(value, str):
        raise TypeError("executors must be a mapping or a list of names, not a string")
    return sorted(str(v) for v in value)


def project_inputs(args: Mapping[str, Any], task_vars: Mapping[str, Any]) -> dict[str, Any]:
    """A task's arguments, falling back to the inventory variables ``specfleet_*``."""
    executors = args.get("executors")
    return {
        "project": args["project"],
        "specs_root": args.get("specs_root") or task_vars.get("specfleet_specs_root"),
        "executors": executors if executors is not None else task_vars.get("specfleet_executors"),
        "default_executor": args.get("default_executor") or task_vars.get("specfleet_default_executor"),
    }


def validate(project: str, specs_root: str | None = None, executors: Any = None,
             default_executor: str | None = None, check_repository: bool = True,
             inventory_groups: Mapping[str, Iterable[str]] | None = None) -> ValidationReport:
    """Validate a project; ``inventory_groups`` is Ansible's ``groups`` (no spec may take a host or group name)."""
    root = resolve_specs_root(specs_root)
    try:
        display = str(root.relative_to(REPO_ROOT))
    except ValueError:
        display = str(root)
    return validate_project(root, project, executor_names(executors), default_executor,
                            check_repository=check_repository, display_root=display,
                            inventory_groups=inventory_groups)


def feed(project: str, db: str | None = None, specs_root: str | None = None, executors: Any = None,
         default_executor: str | None = None, dry_run: bool = False,
         inventory_groups: Mapping[str, Iterable[str]] | None = None) -> tuple[ValidationReport, FeedResult | None]:
    """Validate, then upsert into the store; ``None`` as the result when the project is invalid.

    Nothing is stored unless every spec is valid, including against ``inventory_groups``.
    """
    report = validate(project, specs_root, executors, default_executor, inventory_groups=inventory_groups)
    if not report.ok:
        return report, None
    with Store(resolve_db(db)) as store:
        result = store.feed_preview(report) if dry_run else store.feed(report)
    return report, result


def new_run_id() -> str:
    return LeaseBook.new_run_id()


def plan(db: str | None, project: str, ttl: float = 90.0, reclaim: bool = True) -> list[dict[str, Any]]:
    """The specs a new dispatch run takes on: every queued spec, in dispatch order.

    With ``reclaim`` (not needed right after :func:`open_dispatch`, which did it) leases of
    dead runs are reclaimed first, so specs they held are queued again and included
    (their jobs are adopted, not started twice).
    """
    with Store(resolve_db(db)) as store:
        if reclaim:
            LeaseBook(store, ttl=ttl).expire()
        rows = store.specs(project, states=[SpecState.QUEUED])
    return [{"task_id": r.task_id, "priority": r.priority, "executor": r.executor, "depends_on": r.depends_on,
             "modifies": r.modifies, "timeout_s": r.timeout_s, "estimate_s": r.estimate_s, "verify": r.verify,
             "revision": r.revision} for r in rows]


def open_dispatch(db: str | None, project: str, owner_pid: int | None = None, work: RunKind = RunKind.AGENTS) -> str:
    """Open a dispatch run of ``project`` owned by ``owner_pid``; refuse while another one lives.

    ``work`` (agents or plain jobs) is recorded with the run: the strategy and the run's
    report read it from there. Raises :class:`~.leases.RunConflict` (a ``StoreError``)
    naming the live run.
    """
    with Store(resolve_db(db)) as store:
        return LeaseBook(store).open_run(project, owner_pid=owner_pid, work=work)


def close_run(db: str | None, run_id: str, status: str) -> None:
    """End ``run_id`` if it is still open (a run whose dispatch play had no spec to run)."""
    with Store(resolve_db(db)) as store:
        LeaseBook(store, run_id).close_run(status)


def run_report(db: str | None, project: str, run_id: str | None, task_ids: Iterable[str],
               done: str | None = None) -> dict[str, Any]:
    """Where the specs a dispatch run took on ended up, with reasons; ``complete`` if all are ``done``.

    ``done`` is ``merged`` (the branch landed on integration) or, for plain jobs, ``completed``;
    by default what the run's kind, recorded at feed, says (merged when none was recorded).
    ``usage``: tokens and cost of the run's collected attempts, in total, per executor and per
    spec (:mod:`specfleet.report.usage`), also written as lines after the summary.
    """
    wanted = sorted(set(task_ids))
    with Store(resolve_db(db)) as store:
        rows = {r.task_id: r for r in store.specs(project)}
        attempts = {}
        used: list[dict] = []
        done = done or (store.run_kind(run_id) or RunKind.AGENTS).done.value
        if run_id:
            attempts = store.attempts_per_spec(run_id)
            used = store.usage_rows(project, run_id=run_id)
    by_state: dict[str, list[str]] = {}
    lines = []
    for task_id in wanted:
        row = rows.get(task_id)
        state = row.state.value if row else "missing"
        by_state.setdefault(state, []).append(task_id)
        if state != done:
            why = f": {row.reason}" if row is not None and row.reason else ""
            lines.append(f"{task_id} {state}{why}")
    counts = ", ".join(f"{len(ids)} {state}" for state, ids in sorted(by_state.items()))
    summary = f"{project}: {len(wanted)} specs in this run: {counts or 'none'}"
    usage = spent.rollup(used, by=("executor", "task_id"))
    return {"summary": summary, "not_completed": lines, "by_state": by_state, "attempts": attempts,
            "usage": usage, "usage_lines": _usage_lines(usage),
            "complete": all(s == done for s in by_state) if wanted else True}


def _usage_lines(usage: dict[str, Any]) -> list[str]:
    """The run's tokens and cost: in total, per executor, per spec (an unknown cost says so, never $0)."""
    if not usage["total"]["attempts"]:
        return []
    return ([f"tokens and cost of this run: {spent.line(usage['total'])}"]
            + [f"  executor {e['executor']}: {spent.line(e)}" for e in usage["by_executor"]]
            + [f"  spec {e['task_id']}: {spent.line(e)}" for e in usage["by_task_id"]])


def request_stop(db: str | None, project: str, mode: str) -> dict[str, Any]:
    """Ask the live dispatch runs of ``project`` to stop; list the jobs a cancel must kill."""
    with Store(resolve_db(db)) as store:
        book = LeaseBook(store)
        runs = book.request_stop(project, mode)
        jobs = store.leased_jobs(project)
    return {"runs": runs, "jobs": jobs}


def live_runs(db: str | None, project: str) -> list[dict[str, Any]]:
    """Dispatch runs of ``project`` that have not ended (dead ones are reclaimed first)."""
    with Store(resolve_db(db)) as store:
        LeaseBook(store).expire()
        return [{k: r[k] for k in ("id", "owner", "stop", "heartbeat_at")} for r in store.live_dispatch_runs(project)]
