# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Specs: feeding a validated project, revisions, state transitions (compare-and-set), rescue, lessons.

A spec's state changes only through :meth:`SpecQueries.transition` (or ``_transition``
inside a caller's transaction), which checks :data:`~specfleet.model.states.TRANSITIONS`
and does a compare-and-set on ``(state, version)``, so of two processes racing for the
same change exactly one wins.
"""
from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from specfleet.model.graph import SpecGraph
from specfleet.model.states import SpecState, check_transition
from specfleet.store import base
from specfleet.store.base import StaleState, StoreError
from specfleet.store.base import event as _event


class SpecSummary(NamedTuple):
    """What a scheduling pass reads of every spec, every pass: cheap to build (``modifies`` stays
    JSON until asked for, since only the ready specs need it)."""

    task_id: str
    state: SpecState
    reason: str | None
    priority: int
    estimate_s: int
    executor: str | None
    depends_on: list[str]
    modifies_json: str

    @property
    def modifies(self) -> list[str]:
        return json.loads(self.modifies_json)


@dataclass
class SpecRow:
    project: str
    task_id: str
    state: SpecState
    version: int
    revision: int
    content_hash: str
    path: str
    priority: int
    estimate_s: int
    timeout_s: int
    retries: int
    executor: str | None
    verify: str | None
    depends_on: list[str]
    modifies: list[str]
    attempts_used: int
    reason: str | None
    file_present: bool
    created_at: float
    updated_at: float

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> SpecRow:
        data = dict(row)
        data["state"] = SpecState(data["state"])
        data["depends_on"] = json.loads(data.pop("depends_on_json"))
        data["modifies"] = json.loads(data.pop("modifies_json"))
        data["file_present"] = bool(data["file_present"])
        return cls(**data)


@dataclass
class FeedResult:
    project: str
    added: list[str] = field(default_factory=list)
    revised: list[str] = field(default_factory=list)
    requeued: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    restored: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    project_changed: bool = False

    @property
    def changed(self) -> bool:
        return bool(self.project_changed or self.added or self.revised or self.removed or self.restored)

    def as_dict(self) -> dict[str, Any]:
        return {"project": self.project, "changed": self.changed, "added": self.added, "revised": self.revised,
                "requeued": self.requeued, "removed": self.removed, "restored": self.restored,
                "unchanged": self.unchanged, "project_changed": self.project_changed}



class SpecQueries:
    """A mixin of :class:`~specfleet.store.core.Store`: specs, their revisions, transitions and lessons."""

    # -- reading and moving specs ------------------------------------------------------------

    def spec(self, project: str, task_id: str) -> SpecRow | None:
        row = self.db.execute("SELECT * FROM specs WHERE project = ? AND task_id = ?", (project, task_id)).fetchone()
        return SpecRow.from_row(row) if row else None

    def specs(self, project: str, states: Sequence[SpecState | str] | None = None) -> list[SpecRow]:
        query, args = "SELECT * FROM specs WHERE project = ?", [project]
        if states:
            query += f" AND state IN ({','.join('?' * len(states))})"
            args += [str(s) for s in states]
        return [SpecRow.from_row(r) for r in self.db.execute(query + " ORDER BY task_id", args)]

    def spec_summaries(self, project: str, task_ids: Sequence[str] | None = None) -> dict[str, SpecSummary]:
        """The project's specs (or those of ``task_ids`` that exist) as :class:`SpecSummary`, in one query."""
        query, args = ("SELECT task_id, state, reason, priority, estimate_s, executor, depends_on_json, modifies_json"
                       " FROM specs WHERE project = ?"), [project]
        if task_ids is not None:
            query += f" AND task_id IN ({','.join('?' * len(task_ids)) or 'NULL'})"
            args += list(task_ids)
        return {r[0]: SpecSummary(r[0], SpecState(r[1]), r[2], r[3], r[4], r[5], json.loads(r[6]), r[7])
                for r in self.db.execute(query, args)}

    def transition(self, project: str, task_id: str, target: SpecState | str, *, reason: str | None = None,
                   expect_state: SpecState | str | None = None, expect_version: int | None = None,
                   run_id: str | None = None, detail: dict | None = None) -> SpecRow:
        """Move a spec to ``target`` if the table allows it and nobody changed it meanwhile.

        ``expect_state``/``expect_version`` are what the caller based its decision on;
        when the row differs, :class:`StaleState` is raised and nothing is written.
        """
        target = SpecState(target)
        with self.transaction() as db:
            return self._transition(db, project, task_id, target, reason=reason, expect_state=expect_state,
                                    expect_version=expect_version, run_id=run_id, detail=detail)

    def _transition(self, db: sqlite3.Connection, project: str, task_id: str, target: SpecState, *,
                    reason: str | None, expect_state: SpecState | str | None = None,
                    expect_version: int | None = None, run_id: str | None = None,
                    detail: dict | None = None, extra_sets: dict[str, Any] | None = None) -> SpecRow:
        row = db.execute("SELECT state, version FROM specs WHERE project = ? AND task_id = ?",
                         (project, task_id)).fetchone()
        if row is None:
            raise StoreError(f"no spec {task_id!r} in project {project!r}")
        current = SpecState(row["state"])
        if expect_state is not None and current != SpecState(expect_state):
            raise StaleState(f"{project}/{task_id} is {current}, not {SpecState(expect_state)}")
        if expect_version is not None and row["version"] != expect_version:
            raise StaleState(f"{project}/{task_id} changed (version {row['version']}, expected {expect_version})")
        check_transition(current, target, reason)
        sets = {"state": target.value, "reason": reason, "updated_at": base.now(), **(extra_sets or {})}
        assignments = ", ".join(f"{k} = ?" for k in sets)
        cursor = db.execute(
            f"UPDATE specs SET {assignments}, version = version + 1 "
            "WHERE project = ? AND task_id = ? AND state = ? AND version = ?",
            [*sets.values(), project, task_id, current.value, row["version"]])
        if cursor.rowcount != 1:
            raise StaleState(f"{project}/{task_id} changed while it was being moved to {target}")
        _event(db, "state", project, task_id, run_id, current.value, target.value,
               dict(detail or {}, **({"reason": reason} if reason else {})))
        new = db.execute("SELECT * FROM specs WHERE project = ? AND task_id = ?", (project, task_id)).fetchone()
        return SpecRow.from_row(new)

    def spec_state(self, project: str, task_id: str) -> SpecState | None:
        row = self.db.execute("SELECT state FROM specs WHERE project = ? AND task_id = ?", (project, task_id)).fetchone()
        return SpecState(row["state"]) if row else None

    def spec_failed(self, project: str, task_id: str, reason: str, run_id: str | None = None,
                    detail: dict | None = None) -> tuple[SpecState, list[str]]:
        """A spec-level failure, in its own transaction or the caller's (see ``_spec_failed``)."""
        with self.transaction() as db:
            return self._spec_failed(db, project, task_id, reason, run_id, detail)

    def _spec_failed(self, db: sqlite3.Connection, project: str, task_id: str, reason: str,
                     run_id: str | None = None, detail: dict | None = None) -> tuple[SpecState, list[str]]:
        """A spec-level failure (agent, verify, merge): use an attempt; queue again or fail.

        Back to ``queued`` while ``retries`` allow, else ``failed`` and every queued
        descendant ``blocked`` naming it. Returns the new state and the blocked specs.
        """
        row = db.execute("SELECT attempts_used, retries FROM specs WHERE project = ? AND task_id = ?",
                         (project, task_id)).fetchone()
        used = row["attempts_used"] + 1
        if used <= row["retries"]:
            self._transition(db, project, task_id, SpecState.QUEUED, reason=reason, run_id=run_id, detail=detail,
                             extra_sets={"attempts_used": used})
            return SpecState.QUEUED, []
        self._transition(db, project, task_id, SpecState.FAILED, reason=reason, run_id=run_id, detail=detail,
                         extra_sets={"attempts_used": used})
        return SpecState.FAILED, self._block_descendants(db, project, task_id, run_id)

    def _block_descendants(self, db: sqlite3.Connection, project: str, task_id: str,
                           run_id: str | None = None) -> list[str]:
        rows = db.execute("SELECT task_id, state, depends_on_json FROM specs WHERE project = ?", (project,)).fetchall()
        graph = SpecGraph({r["task_id"]: json.loads(r["depends_on_json"]) for r in rows})
        states = {r["task_id"]: SpecState(r["state"]) for r in rows}
        blocked = []
        for child in sorted(graph.descendants(task_id)):
            if states[child] is SpecState.QUEUED:
                self._transition(db, project, child, SpecState.BLOCKED, reason=f"dependency {task_id} failed",
                                 run_id=run_id)
                blocked.append(child)
        return blocked


    def rescue(self, project: str, task_ids: Sequence[str] = (), run_id: str | None = None) -> dict[str, Any]:
        """Queue failed and blocked specs again, with their attempts reset (DAGMan's rescue DAG).

        Without ``task_ids``: every ``failed`` and ``blocked`` spec of the project. With
        them: those specs (``cancelled`` ones too, since a person named them) and the
        ``blocked`` specs that depend on them. Completed work is never re-run. A spec in any
        other state is left alone and listed under ``skipped``.
        """
        with self.transaction() as db:
            rows = {r["task_id"]: r for r in db.execute(
                "SELECT task_id, state, depends_on_json FROM specs WHERE project = ?", (project,))}
            if not rows:
                raise StoreError(f"no project {project!r} in the state store: feed or dispatch it first")
            unknown = sorted(set(task_ids) - set(rows))
            if unknown:
                raise StoreError(f"project {project} has no spec {', '.join(unknown)}")
            stuck = (SpecState.FAILED.value, SpecState.BLOCKED.value)
            if task_ids:
                graph = SpecGraph({t: json.loads(r["depends_on_json"]) for t, r in rows.items()})
                wanted = set(task_ids) | {d for t in task_ids for d in graph.descendants(t)
                                          if rows[d]["state"] == SpecState.BLOCKED.value}
            else:
                wanted = {t for t, r in rows.items() if r["state"] in stuck}
            requeued, skipped = [], {}
            for task_id in sorted(wanted):
                state = rows[task_id]["state"]
                if state in stuck or (state == SpecState.CANCELLED.value and task_id in task_ids):
                    self._transition(db, project, task_id, SpecState.QUEUED, reason=None, run_id=run_id,
                                     detail={"rescued_from": state}, extra_sets={"attempts_used": 0})
                    requeued.append(task_id)
                else:
                    skipped[task_id] = state
            _event(db, "rescued", project, run_id=run_id, detail={"requeued": requeued, "skipped": skipped})
        return {"requeued": requeued, "skipped": skipped}


    # -- feeding ----------------------------------------------------------------------------

    def feed(self, report: Any, dry_run: bool = False) -> FeedResult:
        """Upsert a validated project (a :class:`~.validation.ValidationReport` with ``ok``).

        Idempotent: feeding the same files again writes nothing. The revision policy for a
        spec whose file changed (``content_hash`` differs):

        * ``queued``: the new revision replaces the old one before anything ran.
        * ``running``: the attempt finishes on the revision it started with; the spec's
          ``revision`` moves on, so the dispatcher re-queues it when that attempt ends.
        * ``completed``, ``verified``, ``in_review``, ``conflict``: the result was built from
          an outdated spec: back to ``queued`` with attempts reset; its branch is kept.
        * ``failed``, ``blocked``, ``cancelled``: the revision is recorded and the state kept;
          ``rescue`` re-queues on the newest revision (a person decides, not an edit).
        * ``merged``: recorded only; a merged spec is never re-run, write a new spec.

        A spec whose file disappeared is cancelled if it is ``queued`` or ``blocked``;
        otherwise only flagged, because work already exists for it.
        """
        if not report.ok:
            raise StoreError(f"project {report.project} is invalid; nothing was fed\n{report.summary()}")
        config = report.config
        result = FeedResult(report.project)
        stamp = base.now()
        with self.transaction() as db:
            result.project_changed = _configure_project(db, config, stamp)
            existing = {r["task_id"]: r for r in db.execute("SELECT * FROM specs WHERE project = ?", (config.name,))}
            for task_id, spec in sorted(report.specs.items()):
                row = existing.get(task_id)
                if row is None:
                    _insert_spec(db, spec, stamp)
                    result.added.append(task_id)
                elif row["content_hash"] != spec.content_hash:
                    self._revise(db, row, spec, stamp, result)
                elif not row["file_present"]:
                    db.execute("UPDATE specs SET file_present = 1, path = ?, updated_at = ? WHERE project = ? AND"
                               " task_id = ?", (spec.path, stamp, config.name, task_id))
                    _event(db, "spec_file_restored", config.name, task_id)
                    result.restored.append(task_id)
                else:
                    result.unchanged.append(task_id)
            for task_id, row in sorted(existing.items()):
                if task_id not in report.specs and row["file_present"]:
                    self._file_removed(db, row, stamp)
                    result.removed.append(task_id)
            if dry_run:
                raise _DryRun(result)
        return result

    def _file_removed(self, db: sqlite3.Connection, row: sqlite3.Row, stamp: float) -> None:
        """The spec's file is gone: flag it; cancel it if nothing ran for it (``queued``, ``blocked``)."""
        project, task_id = row["project"], row["task_id"]
        db.execute("UPDATE specs SET file_present = 0, updated_at = ? WHERE project = ? AND task_id = ?",
                   (stamp, project, task_id))
        _event(db, "spec_file_removed", project, task_id, detail={"path": row["path"]})
        if row["state"] in (SpecState.QUEUED.value, SpecState.BLOCKED.value):
            self._transition(db, project, task_id, SpecState.CANCELLED, reason=f"spec file {row['path']} was removed")

    def _revise(self, db: sqlite3.Connection, row: sqlite3.Row, spec: Any, stamp: float, result: FeedResult) -> None:
        project, task_id = row["project"], row["task_id"]
        revision = row["revision"] + 1
        _insert_revision(db, spec, revision, stamp)
        db.execute(
            "UPDATE specs SET revision = ?, content_hash = ?, path = ?, priority = ?, estimate_s = ?, timeout_s = ?,"
            " retries = ?, executor = ?, verify = ?, depends_on_json = ?, modifies_json = ?, file_present = 1,"
            " updated_at = ?, version = version + 1 WHERE project = ? AND task_id = ?",
            (revision, spec.content_hash, spec.path, spec.priority, spec.estimate, spec.timeout, spec.retries,
             spec.executor, spec.verify, json.dumps(list(spec.depends_on)), json.dumps(list(spec.modifies)),
             stamp, project, task_id))
        state = SpecState(row["state"])
        _event(db, "spec_revised", project, task_id, detail={"revision": revision, "state": state.value})
        result.revised.append(task_id)
        if state in (SpecState.COMPLETED, SpecState.VERIFIED, SpecState.IN_REVIEW, SpecState.CONFLICT):
            self._transition(db, project, task_id, SpecState.QUEUED,
                             reason=f"spec revised to r{revision}; the result of r{row['revision']} is outdated",
                             extra_sets={"attempts_used": 0})
            result.requeued.append(task_id)

    def feed_preview(self, report: Any) -> FeedResult:
        """What :meth:`feed` would do, without writing (check mode)."""
        try:
            self.feed(report, dry_run=True)
        except _DryRun as dry:
            return dry.result
        raise AssertionError("dry run did not roll back")  # pragma: no cover


    # -- lessons and revisions --------------------------------------------------------------

    def add_lesson(self, project: str, task_id: str | None, attempt: int | None, kind: str, text: str) -> None:
        with self.transaction() as db:
            self._add_lesson(db, project, task_id, attempt, kind, text)

    @staticmethod
    def _add_lesson(db: sqlite3.Connection, project: str, task_id: str | None, attempt: int | None, kind: str,
                    text: str) -> None:
        """A lesson inside the caller's transaction (with the state change it explains)."""
        db.execute("INSERT INTO lessons (project, task_id, attempt, kind, text, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                   (project, task_id, attempt, kind, text, base.now()))

    def lessons(self, project: str, limit: int = 50) -> list[dict]:
        """The project's lessons, newest first (exact project name: no leaking across projects)."""
        return [dict(r) for r in self.db.execute(
            "SELECT * FROM lessons WHERE project = ? ORDER BY id DESC LIMIT ?", (project, limit))]

    def revision_text(self, project: str, task_id: str, revision: int) -> tuple[dict, str] | None:
        row = self.db.execute("SELECT front_matter_json, body FROM spec_revisions WHERE project = ? AND task_id = ?"
                              " AND revision = ?", (project, task_id, revision)).fetchone()
        return (json.loads(row["front_matter_json"]), row["body"]) if row else None


class _DryRun(Exception):
    def __init__(self, result: FeedResult):
        super().__init__("dry run")
        self.result = result


def _configure_project(db: sqlite3.Connection, config: Any, stamp: float) -> bool:
    """Record the project's settings if they changed (``config_hash``); True if they did."""
    row = db.execute("SELECT config_hash FROM projects WHERE name = ?", (config.name,)).fetchone()
    if row is not None and row["config_hash"] == config.config_hash:
        return False
    db.execute(
        "INSERT INTO projects (name, folder, repository, base_branch, config_json, config_hash, created_at,"
        " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET folder = excluded.folder,"
        " repository = excluded.repository, base_branch = excluded.base_branch,"
        " config_json = excluded.config_json, config_hash = excluded.config_hash,"
        " updated_at = excluded.updated_at",
        (config.name, str(config.folder), config.repository, config.base_branch,
         json.dumps(config.raw, sort_keys=True, default=str), config.config_hash, stamp, stamp))
    _event(db, "project_configured", config.name, detail={"config_hash": config.config_hash})
    return True


def _insert_spec(db: sqlite3.Connection, spec: Any, stamp: float) -> None:
    db.execute(
        "INSERT INTO specs (project, task_id, state, revision, content_hash, path, priority, estimate_s, timeout_s,"
        " retries, executor, verify, depends_on_json, modifies_json, created_at, updated_at)"
        " VALUES (?, ?, ?, 1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (spec.project, spec.task_id, SpecState.QUEUED.value, spec.content_hash, spec.path, spec.priority,
         spec.estimate, spec.timeout, spec.retries, spec.executor, spec.verify,
         json.dumps(list(spec.depends_on)), json.dumps(list(spec.modifies)), stamp, stamp))
    _insert_revision(db, spec, 1, stamp)
    _event(db, "spec_added", spec.project, spec.task_id, to_state=SpecState.QUEUED.value,
           detail={"revision": 1, "path": spec.path})


def _insert_revision(db: sqlite3.Connection, spec: Any, revision: int, stamp: float) -> None:
    db.execute("INSERT INTO spec_revisions (project, task_id, revision, content_hash, path, front_matter_json, body,"
               " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
               (spec.project, spec.task_id, revision, spec.content_hash, spec.path,
                json.dumps(spec.front_matter, sort_keys=True, ensure_ascii=False, default=str), spec.body, stamp))
