# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Slot leases, path locks and leftovers: the rows behind :class:`~specfleet.dispatch.leases.LeaseBook`.

These methods only read and write; every decision (who may start, when a run is dead,
what a leftover's job report means) is the lease book's and the scheduler's. Each method
opens its own transaction, or joins the caller's (``Store.transaction`` is re-entrant):
a grant pass runs all of its reads and writes inside one ``BEGIN IMMEDIATE``.
"""
from __future__ import annotations

import sqlite3
from collections.abc import Collection
from typing import Any

from specfleet.model.states import SpecState
from specfleet.store.base import event as _event
from specfleet.store.specs import SpecRow

OCCUPYING = ("unknown", "running")  # leftover statuses that still use a slot on their node

_LEFTOVER_WITH_STATE = ("SELECT l.*, s.state FROM leftovers l JOIN specs s ON s.project = l.project AND"
                        " s.task_id = l.task_id WHERE l.attempt_id = ?")


def _marks(values: Collection) -> str:
    """``?`` placeholders for an ``IN (...)``; one even for no values (``IN (NULL)`` matches nothing)."""
    return ",".join("?" * len(values)) or "NULL"


class LeaseQueries:
    """A mixin of :class:`~specfleet.store.core.Store`: slot leases, path locks, leftovers, attempts' ends."""

    # -- what the grant pass reads ----------------------------------------------------------

    def project_repository(self, project: str) -> str | None:
        row = self.db.execute("SELECT repository FROM projects WHERE name = ?", (project,)).fetchone()
        return row["repository"] if row else None

    def occupied_slots(self, stamp: float) -> list[tuple[str, int]]:
        """Every ``(node, slot)`` in use: leased, or held by a leftover whose job may still run."""
        rows = list(self.db.execute("SELECT node, slot FROM slot_leases"))
        rows += self.db.execute(f"SELECT node, slot FROM leftovers WHERE status IN ({_marks(OCCUPYING)})"
                                " AND until > ?", (*OCCUPYING, stamp))
        return [(r["node"], r["slot"]) for r in rows]

    def path_locks_in(self, repository: str) -> list[tuple[str, str, str]]:
        """The locks held on ``repository``'s files: ``(path, task id, project)``."""
        return [(r["path"], r["task_id"], r["project"]) for r in self.db.execute(
            "SELECT path, task_id, project FROM path_locks WHERE repository = ?", (repository,))]

    def leftovers_of(self, project: str) -> list[dict]:
        """The project's leftovers, newest attempt first."""
        return [dict(r) for r in self.db.execute(
            "SELECT * FROM leftovers WHERE project = ? ORDER BY attempt_id DESC", (project,))]

    def leftovers(self, node: str | None = None) -> list[dict]:
        """Every leftover (or ``node``'s) with its attempt number and its spec's state."""
        query, args = "SELECT l.*, a.number AS attempt, s.state FROM leftovers l JOIN attempts a ON a.id = l.attempt_id" \
                      " JOIN specs s ON s.project = l.project AND s.task_id = l.task_id", []
        if node is not None:
            query += " WHERE l.node = ?"
            args.append(node)
        return [dict(r) for r in self.db.execute(query + " ORDER BY l.attempt_id", args)]

    def leased_jobs(self, project: str) -> list[dict]:
        """The project's jobs holding a slot now: ``node``, ``task_id``, ``run_id``, ``attempt`` (its number)."""
        return [dict(r) for r in self.db.execute(
            "SELECT l.node, l.task_id, l.run_id, a.number AS attempt FROM slot_leases l"
            " JOIN attempts a ON a.id = l.attempt_id WHERE l.project = ? ORDER BY l.node, l.task_id", (project,))]

    def leftover(self, attempt_id: int) -> dict | None:
        """One leftover with its spec's ``state``, or None when it is gone."""
        row = self.db.execute(_LEFTOVER_WITH_STATE, (attempt_id,)).fetchone()
        return dict(row) if row else None

    def defer_foreign_keys(self) -> None:
        """Inside a transaction that is never committed (a preview): its attempts name no live run."""
        self.db.execute("PRAGMA defer_foreign_keys = ON")

    # -- granting -----------------------------------------------------------------------------

    def start_attempt(self, spec: SpecRow, node: str, slot: int, run_id: str, repository: str, stamp: float,
                      ttl: float) -> tuple[int, int]:
        """A new attempt of ``spec`` (a :class:`~.specs.SpecRow`) on ``node``/``slot``, its lease and locks,
        and the spec ``running``; returns ``(attempt number, attempt id)``."""
        with self.transaction() as db:
            number = db.execute("SELECT COALESCE(MAX(number), 0) + 1 FROM attempts WHERE project = ? AND task_id = ?",
                                (spec.project, spec.task_id)).fetchone()[0]
            cursor = db.execute("INSERT INTO attempts (project, task_id, number, revision, run_id, node, slot,"
                                " started_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                                (spec.project, spec.task_id, number, spec.revision, run_id, node, slot, stamp))
            attempt_id = cursor.lastrowid
            _take(db, spec, node, slot, attempt_id, run_id, repository, stamp, ttl)
            self._transition(db, spec.project, spec.task_id, SpecState.RUNNING, reason=None,
                             expect_state=SpecState.QUEUED, expect_version=spec.version, run_id=run_id,
                             detail={"node": node, "slot": slot, "attempt": number})
        return number, attempt_id

    def adopt_leftover(self, spec: SpecRow, leftover: Any, slot: int, run_id: str, repository: str, stamp: float,
                       ttl: float) -> tuple[int, int]:
        """Grant ``spec`` its ``leftover`` attempt again (``attempt_id``, ``node``, ``job_run``, ``status``
        attributes), on the leftover's node; returns ``(number, revision)``."""
        project, task_id, node, attempt_id = spec.project, spec.task_id, leftover.node, leftover.attempt_id
        with self.transaction() as db:
            attempt = db.execute("SELECT number, revision FROM attempts WHERE id = ?", (attempt_id,)).fetchone()
            db.execute("DELETE FROM leftovers WHERE attempt_id = ?", (attempt_id,))
            db.execute("UPDATE attempts SET ended_at = NULL, outcome = NULL, reason = NULL, kind = 'spec',"
                       " adopted_by = ?, slot = ? WHERE id = ?", (run_id, slot, attempt_id))
            _take(db, spec, node, slot, attempt_id, run_id, repository, stamp, ttl)
            detail = {"node": node, "slot": slot, "attempt": attempt["number"], "adopted_from": leftover.job_run,
                      "leftover": leftover.status}
            _event(db, "attempt_adopted", project, task_id, run_id, detail=detail)
            self._transition(db, project, task_id, SpecState.RUNNING, reason=None, expect_state=SpecState.QUEUED,
                             expect_version=spec.version, run_id=run_id, detail=detail)
        return attempt["number"], attempt["revision"]

    # -- leases ending --------------------------------------------------------------------------

    def leases_of_run(self, run_id: str) -> list[dict]:
        return [dict(r) for r in self.db.execute("SELECT * FROM slot_leases WHERE run_id = ?", (run_id,))]

    def leases_expired(self, stamp: float, dead_runs: Collection[str]) -> list[dict]:
        """Leases nobody renewed in time, and every lease of the ``dead_runs``."""
        return [dict(r) for r in self.db.execute(
            f"SELECT * FROM slot_leases WHERE expires_at < ? OR run_id IN ({_marks(dead_runs)})",
            (stamp, *dead_runs))]

    def drop_expired_locks(self, stamp: float, dead_runs: Collection[str]) -> None:
        """Path locks nobody renewed, and the dead runs' own (a leftover's locks stay until it ends)."""
        self.db.execute(f"DELETE FROM path_locks WHERE expires_at < ? OR (run_id IN ({_marks(dead_runs)}) AND"
                        " leftover IS NULL)", (stamp, *dead_runs))

    def lease_held(self, project: str, task_id: str, run_id: str, attempt_id: int) -> bool:
        return self.db.execute("SELECT 1 FROM slot_leases WHERE project = ? AND task_id = ? AND run_id = ? AND"
                               " attempt_id = ?", (project, task_id, run_id, attempt_id)).fetchone() is not None

    def leases_of_spec(self, project: str, task_id: str, run_id: str) -> list[dict]:
        return [dict(r) for r in self.db.execute(
            "SELECT * FROM slot_leases WHERE project = ? AND task_id = ? AND run_id = ?", (project, task_id, run_id))]

    def job_of_attempt(self, attempt_id: int) -> dict:
        """The run that started attempt ``attempt_id``, when, and its spec's ``timeout_s``."""
        return dict(self.db.execute("SELECT a.run_id, a.started_at, s.timeout_s FROM attempts a JOIN specs s ON"
                                    " s.project = a.project AND s.task_id = a.task_id WHERE a.id = ?",
                                    (attempt_id,)).fetchone())

    def lease_to_leftover(self, lease: dict, job_run: str, reason: str, stamp: float, until: float,
                          run_id: str) -> None:
        """Free ``lease``'s row but record its job as a leftover holding the slot and the spec's locks until ``until``."""
        key = (lease["project"], lease["task_id"])
        with self.transaction() as db:
            db.execute("DELETE FROM slot_leases WHERE node = ? AND slot = ?", (lease["node"], lease["slot"]))
            db.execute("INSERT OR REPLACE INTO leftovers (attempt_id, node, slot, project, task_id, job_run, status,"
                       " reason, since, until) VALUES (?, ?, ?, ?, ?, ?, 'unknown', ?, ?, ?)",
                       (lease["attempt_id"], lease["node"], lease["slot"], *key, job_run, reason, stamp, until))
            db.execute("UPDATE path_locks SET expires_at = ?, leftover = ? WHERE project = ? AND task_id = ? AND"
                       " run_id = ?", (until, lease["attempt_id"], *key, lease["run_id"]))
            _event(db, "leftover_recorded", *key, run_id,
                   detail={"node": lease["node"], "attempt_id": lease["attempt_id"], "reason": reason})

    def drop_lease(self, lease: dict) -> None:
        """Free ``lease``'s slot and the path locks its run holds for the spec."""
        with self.transaction() as db:
            db.execute("DELETE FROM slot_leases WHERE node = ? AND slot = ?", (lease["node"], lease["slot"]))
            db.execute("DELETE FROM path_locks WHERE project = ? AND task_id = ? AND run_id = ?",
                       (lease["project"], lease["task_id"], lease["run_id"]))

    def release_slot(self, project: str, task_id: str, run_id: str, keep_locks: bool = False) -> None:
        """Free the slot ``run_id`` leased for ``task_id``; its path locks too unless ``keep_locks``."""
        with self.transaction() as db:
            db.execute("DELETE FROM slot_leases WHERE project = ? AND task_id = ? AND run_id = ?",
                       (project, task_id, run_id))
            if not keep_locks:
                db.execute("DELETE FROM path_locks WHERE project = ? AND task_id = ? AND run_id = ?",
                           (project, task_id, run_id))

    def release_locks(self, project: str, task_id: str, run_id: str) -> None:
        """Free the path locks ``run_id`` kept for ``task_id`` (a leftover's stay)."""
        with self.transaction() as db:
            db.execute("DELETE FROM path_locks WHERE project = ? AND task_id = ? AND run_id = ? AND leftover IS NULL",
                       (project, task_id, run_id))

    def end_attempt(self, attempt_id: int, stamp: float, outcome: str, reason: str | None, kind: str,
                    only_open: bool = False, adopted_by: str | None = None) -> None:
        """Record how attempt ``attempt_id`` ended (``only_open``: unless it already has an end)."""
        sets = "ended_at = ?, outcome = ?, reason = ?, kind = ?" + (", adopted_by = ?" if adopted_by else "")
        args = (stamp, outcome, reason, kind) + ((adopted_by,) if adopted_by else ())
        with self.transaction() as db:
            db.execute(f"UPDATE attempts SET {sets} WHERE id = ?" + (" AND ended_at IS NULL" if only_open else ""),
                       (*args, attempt_id))

    # -- leftovers ending -----------------------------------------------------------------------

    def mark_leftover(self, attempt_id: int, job: str, stamp: float) -> None:
        """What the node says a leftover's job is doing; a ``finished`` job changes no files: its locks go."""
        with self.transaction() as db:
            db.execute("UPDATE leftovers SET status = ?, checked_at = ? WHERE attempt_id = ?", (job, stamp, attempt_id))
            if job == "finished":
                db.execute("DELETE FROM path_locks WHERE leftover = ?", (attempt_id,))

    def drop_leftover(self, attempt_id: int) -> None:
        """The leftover is gone: its slot and its path locks are free."""
        with self.transaction() as db:
            db.execute("DELETE FROM leftovers WHERE attempt_id = ?", (attempt_id,))
            db.execute("DELETE FROM path_locks WHERE leftover = ?", (attempt_id,))


def _take(db: sqlite3.Connection, spec: SpecRow, node: str, slot: int, attempt_id: int, run_id: str, repository: str,
          stamp: float, ttl: float) -> None:
    """The lease and path locks of one spec (its own older locks, a leftover's, are replaced)."""
    project, task_id = spec.project, spec.task_id
    db.execute("INSERT INTO slot_leases (node, slot, project, task_id, run_id, attempt_id, acquired_at, expires_at)"
               " VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (node, slot, project, task_id, run_id, attempt_id, stamp, stamp + ttl))
    db.execute("DELETE FROM path_locks WHERE project = ? AND task_id = ?", (project, task_id))
    db.executemany("INSERT INTO path_locks (repository, path, project, task_id, run_id, acquired_at, expires_at)"
                   " VALUES (?, ?, ?, ?, ?, ?, ?)",
                   [(repository, p, project, task_id, run_id, stamp, stamp + ttl) for p in spec.modifies])
