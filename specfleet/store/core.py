# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The state store: one SQLite database (WAL) shared by every dispatch run on a controller.

Rules every writer follows:

* Times are UTC epoch seconds (``REAL``), from :func:`now`.
* A spec's state changes only through :meth:`Store.transition`, which checks
  :data:`~.states.TRANSITIONS` and does a compare-and-set on ``(state, version)`` inside
  ``BEGIN IMMEDIATE``, so of two processes racing for the same change exactly one wins.
* Every change writes an event in the same transaction. Events are append-only
  (triggers refuse UPDATE and DELETE).
* The schema is versioned with ``PRAGMA user_version``; :data:`MIGRATIONS` upgrade it in
  one exclusive transaction, and a database newer than this code is refused.
"""
from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from specfleet.model.graph import SpecGraph
from specfleet.model.states import SpecState, check_transition
from specfleet.store.base import StaleState, StoreError, now
from specfleet.store.base import event as _event
from specfleet.store.landing import LandingQueries
from specfleet.store.progress import ProgressQueries
from specfleet.store.reports import ReportQueries

MIGRATIONS: list[tuple[int, str, str]] = [
    (1, "specs, revisions, attempts, runs and events", """
CREATE TABLE projects (
    name TEXT PRIMARY KEY,
    folder TEXT NOT NULL,
    repository TEXT NOT NULL,
    base_branch TEXT NOT NULL,
    config_json TEXT NOT NULL,
    config_hash TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE specs (
    project TEXT NOT NULL REFERENCES projects(name),
    task_id TEXT NOT NULL,
    state TEXT NOT NULL,
    version INTEGER NOT NULL DEFAULT 1,
    revision INTEGER NOT NULL,
    content_hash TEXT NOT NULL,
    path TEXT NOT NULL,
    priority INTEGER NOT NULL,
    estimate_s INTEGER NOT NULL,
    timeout_s INTEGER NOT NULL,
    retries INTEGER NOT NULL,
    executor TEXT,
    verify TEXT,
    depends_on_json TEXT NOT NULL,
    modifies_json TEXT NOT NULL,
    attempts_used INTEGER NOT NULL DEFAULT 0,
    reason TEXT,
    file_present INTEGER NOT NULL DEFAULT 1,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (project, task_id)
);
CREATE INDEX specs_by_state ON specs(project, state);
CREATE TABLE spec_revisions (
    project TEXT NOT NULL,
    task_id TEXT NOT NULL,
    revision INTEGER NOT NULL,
    content_hash TEXT NOT NULL,
    path TEXT NOT NULL,
    front_matter_json TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (project, task_id, revision),
    FOREIGN KEY (project, task_id) REFERENCES specs(project, task_id)
);
CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    project TEXT,
    kind TEXT NOT NULL,
    owner TEXT NOT NULL,
    started_at REAL NOT NULL,
    heartbeat_at REAL NOT NULL,
    ended_at REAL,
    status TEXT NOT NULL DEFAULT 'running'
);
CREATE TABLE attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project TEXT NOT NULL,
    task_id TEXT NOT NULL,
    number INTEGER NOT NULL,
    revision INTEGER NOT NULL,
    run_id TEXT REFERENCES runs(id),
    node TEXT,
    kind TEXT NOT NULL DEFAULT 'spec',
    started_at REAL NOT NULL,
    ended_at REAL,
    outcome TEXT,
    reason TEXT,
    UNIQUE (project, task_id, number),
    FOREIGN KEY (project, task_id) REFERENCES specs(project, task_id)
);
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    project TEXT,
    task_id TEXT,
    run_id TEXT,
    kind TEXT NOT NULL,
    from_state TEXT,
    to_state TEXT,
    detail_json TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX events_by_spec ON events(project, task_id, id);
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
    BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
    BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
"""),
    (2, "fleet-wide nodes, slot leases and path locks", """
CREATE TABLE nodes (
    name TEXT PRIMARY KEY,
    slots INTEGER NOT NULL CHECK (slots >= 0),
    enabled INTEGER NOT NULL DEFAULT 1,
    priority INTEGER NOT NULL DEFAULT 0,
    health TEXT NOT NULL DEFAULT 'unknown',
    health_reason TEXT,
    failures INTEGER NOT NULL DEFAULT 0,
    quarantined_until REAL,
    last_seen_at REAL,
    updated_at REAL NOT NULL
);
CREATE TABLE slot_leases (
    node TEXT NOT NULL REFERENCES nodes(name),
    slot INTEGER NOT NULL CHECK (slot >= 0),
    project TEXT NOT NULL,
    task_id TEXT NOT NULL,
    run_id TEXT NOT NULL REFERENCES runs(id),
    attempt_id INTEGER REFERENCES attempts(id),
    acquired_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (node, slot),
    UNIQUE (project, task_id)
);
CREATE TABLE path_locks (
    repository TEXT NOT NULL,
    path TEXT NOT NULL,
    project TEXT NOT NULL,
    task_id TEXT NOT NULL,
    run_id TEXT NOT NULL REFERENCES runs(id),
    acquired_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (repository, path, project, task_id)
);
CREATE INDEX path_locks_by_task ON path_locks(project, task_id);
"""),
    (3, "stop requests on runs, the slot an attempt used", """
ALTER TABLE runs ADD COLUMN stop TEXT CHECK (stop IN ('drain', 'cancel'));
ALTER TABLE attempts ADD COLUMN slot INTEGER;
"""),
    (4, "what an attempt produced; project memory (lessons)", """
ALTER TABLE attempts ADD COLUMN executor TEXT;
ALTER TABLE attempts ADD COLUMN branch TEXT;
ALTER TABLE attempts ADD COLUMN commit_sha TEXT;
ALTER TABLE attempts ADD COLUMN rounds INTEGER;
ALTER TABLE attempts ADD COLUMN artifacts TEXT;
ALTER TABLE attempts ADD COLUMN result_json TEXT;
CREATE TABLE lessons (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project TEXT NOT NULL,
    task_id TEXT,
    attempt INTEGER,
    kind TEXT NOT NULL,
    text TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX lessons_by_project ON lessons(project, id);
"""),
    (5, "run owners, adopted attempts, leftover jobs on nodes", """
ALTER TABLE runs ADD COLUMN owner_host TEXT;
ALTER TABLE runs ADD COLUMN owner_pid INTEGER;
ALTER TABLE runs ADD COLUMN owner_started TEXT;
ALTER TABLE attempts ADD COLUMN adopted_by TEXT;
CREATE TABLE leftovers (
    attempt_id INTEGER PRIMARY KEY REFERENCES attempts(id),
    node TEXT NOT NULL,
    slot INTEGER NOT NULL,
    project TEXT NOT NULL,
    task_id TEXT NOT NULL,
    job_run TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'unknown' CHECK (status IN ('unknown', 'running', 'finished')),
    reason TEXT NOT NULL,
    since REAL NOT NULL,
    until REAL NOT NULL,
    checked_at REAL
);
ALTER TABLE path_locks ADD COLUMN leftover INTEGER;
CREATE INDEX leftovers_by_spec ON leftovers(project, task_id);
CREATE INDEX leftovers_by_node ON leftovers(node);
"""),
    (6, "controller-side checks, merge batches, merges and promotions", """
CREATE TABLE checks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project TEXT NOT NULL,
    task_id TEXT,
    kind TEXT NOT NULL CHECK (kind IN ('verify', 'review', 'batch', 'revert')),
    commit_sha TEXT,
    ok INTEGER NOT NULL,
    summary TEXT NOT NULL,
    detail_json TEXT NOT NULL DEFAULT '{}',
    started_at REAL NOT NULL,
    ended_at REAL NOT NULL
);
CREATE INDEX checks_by_spec ON checks(project, task_id, id);
CREATE TABLE batches (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project TEXT NOT NULL,
    base_commit TEXT NOT NULL,
    members_json TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('testing', 'landed', 'rejected', 'abandoned')),
    tip_commit TEXT,
    landed_json TEXT,
    rejected_json TEXT,
    test_runs INTEGER NOT NULL DEFAULT 0,
    started_at REAL NOT NULL,
    ended_at REAL
);
CREATE TABLE merges (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project TEXT NOT NULL,
    task_id TEXT NOT NULL,
    commit_sha TEXT NOT NULL,
    merge_commit TEXT NOT NULL,
    batch_id INTEGER REFERENCES batches(id),
    tested_commit TEXT NOT NULL,
    merged_at REAL NOT NULL,
    promoted_at REAL,
    promoted_commit TEXT,
    reverted_at REAL,
    revert_reason TEXT
);
CREATE INDEX merges_by_spec ON merges(project, task_id);
"""),
    (7, "nodes taken out by the health guardian or a failed bootstrap, and what the node reported", """
ALTER TABLE nodes ADD COLUMN disabled_by TEXT;
ALTER TABLE nodes ADD COLUMN disabled_reason TEXT;
ALTER TABLE nodes ADD COLUMN disabled_at REAL;
ALTER TABLE nodes ADD COLUMN facts_json TEXT;
ALTER TABLE nodes ADD COLUMN checked_at REAL;
"""),
    (8, "the executors each node runs (its inventory labels), for status's scheduling preview", """
ALTER TABLE nodes ADD COLUMN labels_json TEXT;
"""),
    (9, "what an attempt's agents used: models, tokens, cost, and each executor tried", """
ALTER TABLE attempts ADD COLUMN model TEXT;
ALTER TABLE attempts ADD COLUMN input_tokens INTEGER;
ALTER TABLE attempts ADD COLUMN output_tokens INTEGER;
ALTER TABLE attempts ADD COLUMN cost_usd REAL;
ALTER TABLE attempts ADD COLUMN tries_json TEXT;
"""),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]


def _int_or_none(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def _float_or_none(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


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


class Store(LandingQueries, ReportQueries, ProgressQueries):
    """A connection to the state database; cheap to open, one per process or thread."""

    def __init__(self, path: str | Path, migrations: Sequence[tuple[int, str, str]] = MIGRATIONS,
                 busy_timeout_ms: int = 30000):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.migrations = list(migrations)
        self.db = sqlite3.connect(str(self.path), isolation_level=None, timeout=busy_timeout_ms / 1000)
        self.db.row_factory = sqlite3.Row
        self.db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.execute("PRAGMA synchronous = NORMAL")
        self.db.execute("PRAGMA foreign_keys = ON")
        try:
            os.chmod(self.path, 0o600)
        except OSError:
            pass
        self.migrate()

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self, mode: str = "IMMEDIATE") -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` takes the write lock up front, so read-check-write is atomic."""
        self.db.execute(f"BEGIN {mode}")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # -- schema -----------------------------------------------------------------------------

    @property
    def schema_version(self) -> int:
        return self.db.execute("PRAGMA user_version").fetchone()[0]

    def migrate(self) -> int:
        """Bring the schema to the newest version this code knows; return the version."""
        latest = self.migrations[-1][0] if self.migrations else 0
        if self.schema_version == latest:
            return latest
        with self.transaction("EXCLUSIVE") as db:
            current = db.execute("PRAGMA user_version").fetchone()[0]
            if current > latest:
                raise StoreError(f"{self.path} has schema version {current}, newer than this specfleet "
                                 f"understands ({latest}); upgrade specfleet")
            for version, description, script in self.migrations:
                if version <= current:
                    continue
                for statement in _statements(script):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {int(version)}")
                _event(db, "schema_migrated", detail={"version": version, "description": description})
        return latest

    # -- events -----------------------------------------------------------------------------

    def events(self, project: str | None = None, task_id: str | None = None, since_id: int = 0) -> list[dict]:
        query = "SELECT * FROM events WHERE id > ?"
        args: list[Any] = [since_id]
        if project is not None:
            query += " AND project = ?"
            args.append(project)
        if task_id is not None:
            query += " AND task_id = ?"
            args.append(task_id)
        rows = self.db.execute(query + " ORDER BY id", args).fetchall()
        return [dict(r, detail=json.loads(r["detail_json"])) for r in rows]

    # -- attempts and lessons ---------------------------------------------------------------

    def record_attempt(self, project: str, task_id: str, number: int, *, executor: str | None = None,
                       branch: str | None = None, commit_sha: str | None = None, rounds: int | None = None,
                       artifacts: str | None = None, result: dict | None = None, usage: dict | None = None,
                       tries: list[dict] | None = None) -> None:
        """What attempt ``number`` produced (its outcome is set when its lease ends).

        ``usage``: the runner's sum over every agent try (``input_tokens``, ``output_tokens``,
        ``cost_usd``, ``models``); ``tries``: each executor tried, in order, and how it ended.
        """
        spent = usage or {}
        models = [str(m) for m in spent.get("models") or [] if m]
        with self.transaction() as db:
            db.execute("UPDATE attempts SET executor = ?, branch = ?, commit_sha = ?, rounds = ?, artifacts = ?,"
                       " result_json = ?, model = ?, input_tokens = ?, output_tokens = ?, cost_usd = ?, tries_json = ?"
                       " WHERE project = ? AND task_id = ? AND number = ?",
                       (executor, branch, commit_sha, rounds, artifacts,
                        json.dumps(result or {}, sort_keys=True, ensure_ascii=False), ", ".join(models) or None,
                        _int_or_none(spent.get("input_tokens")), _int_or_none(spent.get("output_tokens")),
                        _float_or_none(spent.get("cost_usd")),
                        json.dumps(tries or [], sort_keys=True, ensure_ascii=False), project, task_id, number))
            _event(db, "attempt_collected", project, task_id,
                   detail={"attempt": number, "executor": executor, "commit": commit_sha, "rounds": rounds,
                           "input_tokens": _int_or_none(spent.get("input_tokens")),
                           "output_tokens": _int_or_none(spent.get("output_tokens")),
                           "cost_usd": _float_or_none(spent.get("cost_usd"))})

    def usage(self, project: str | None = None, since: float | None = None, until: float | None = None,
              by: str = "executor") -> list[dict]:
        """Tokens and cost of collected attempts, summed per ``by`` (executor, node, task_id, model or day).

        ``day`` is the UTC date an attempt started. Attempts with no usage recorded count
        as attempts but add nothing; ``cost_usd`` is None when no attempt of a group had one.
        """
        keys = {"executor": "executor", "node": "node", "task_id": "task_id", "model": "model",
                "day": "date(started_at, 'unixepoch')", "project": "project"}
        if by not in keys:
            raise StoreError(f"usage can be summed by {', '.join(keys)}, not {by!r}")
        where, args = ["executor IS NOT NULL"], []
        for clause, value in (("project = ?", project), ("started_at >= ?", since), ("started_at < ?", until)):
            if value is not None:
                where.append(clause)
                args.append(value)
        rows = self.db.execute(
            f"SELECT {keys[by]} AS key, COUNT(*) AS attempts, SUM(COALESCE(input_tokens, 0)) AS input_tokens,"
            f" SUM(COALESCE(output_tokens, 0)) AS output_tokens, SUM(cost_usd) AS cost_usd FROM attempts"
            f" WHERE {' AND '.join(where)} GROUP BY key ORDER BY key", args)
        return [{by: r["key"], "attempts": r["attempts"], "input_tokens": r["input_tokens"],
                 "output_tokens": r["output_tokens"],
                 "cost_usd": round(r["cost_usd"], 6) if r["cost_usd"] is not None else None} for r in rows]

    def add_lesson(self, project: str, task_id: str | None, attempt: int | None, kind: str, text: str) -> None:
        with self.transaction() as db:
            self._add_lesson(db, project, task_id, attempt, kind, text)

    @staticmethod
    def _add_lesson(db: sqlite3.Connection, project: str, task_id: str | None, attempt: int | None, kind: str,
                    text: str) -> None:
        """A lesson inside the caller's transaction (with the state change it explains)."""
        db.execute("INSERT INTO lessons (project, task_id, attempt, kind, text, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                   (project, task_id, attempt, kind, text, now()))

    def lessons(self, project: str, limit: int = 50) -> list[dict]:
        """The project's lessons, newest first (exact project name: no leaking across projects)."""
        return [dict(r) for r in self.db.execute(
            "SELECT * FROM lessons WHERE project = ? ORDER BY id DESC LIMIT ?", (project, limit))]

    def revision_text(self, project: str, task_id: str, revision: int) -> tuple[dict, str] | None:
        row = self.db.execute("SELECT front_matter_json, body FROM spec_revisions WHERE project = ? AND task_id = ?"
                              " AND revision = ?", (project, task_id, revision)).fetchone()
        return (json.loads(row["front_matter_json"]), row["body"]) if row else None

    # -- runs -------------------------------------------------------------------------------

    def open_runs_of(self, host: str, pid: int) -> list[str]:
        """Runs process ``pid`` on ``host`` opened and has not closed."""
        return [r["id"] for r in self.db.execute("SELECT id FROM runs WHERE ended_at IS NULL AND owner_host = ?"
                                                 " AND owner_pid = ? ORDER BY started_at", (host, pid))]

    # -- specs ------------------------------------------------------------------------------

    def spec(self, project: str, task_id: str) -> SpecRow | None:
        row = self.db.execute("SELECT * FROM specs WHERE project = ? AND task_id = ?", (project, task_id)).fetchone()
        return SpecRow.from_row(row) if row else None

    def specs(self, project: str, states: Sequence[SpecState | str] | None = None) -> list[SpecRow]:
        query, args = "SELECT * FROM specs WHERE project = ?", [project]
        if states:
            query += f" AND state IN ({','.join('?' * len(states))})"
            args += [str(s) for s in states]
        return [SpecRow.from_row(r) for r in self.db.execute(query + " ORDER BY task_id", args)]

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
        sets = {"state": target.value, "reason": reason, "updated_at": now(), **(extra_sets or {})}
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

    # -- nodes taken out and put back (health guardian, bootstrap) -------------------------

    def node_status(self, name: str | None = None) -> list[dict[str, Any]]:
        """The store's rows of every node (or one), with ``facts`` decoded."""
        sql, params = "SELECT * FROM nodes", ()
        if name is not None:
            sql, params = sql + " WHERE name = ?", (name,)
        rows = [dict(r) for r in self.db.execute(sql + " ORDER BY name", params)]
        for row in rows:
            row["facts"] = json.loads(row.pop("facts_json") or "{}")
        return rows

    def set_node_out(self, name: str, by: str, reason: str, facts: dict | None = None) -> bool:
        """Keep ``name`` out of every dispatch until :meth:`set_node_in`; True if that is new.

        Separate from quarantine (a dispatch's own, timed back-off): a node taken out by
        ``by`` (``health``, ``bootstrap``) stays out until the same kind of check passes. A
        node a failed bootstrap took out stays bootstrap's (health cannot put it back); a new
        reason from the same check only replaces the text.
        """
        stamp = now()
        with self.transaction() as db:
            row = _node_row(db, name, stamp)
            if row["disabled_by"] == "bootstrap" and by != "bootstrap":
                # Only a bootstrap that passes may put this node back: health does not take it over.
                db.execute("UPDATE nodes SET checked_at = ? WHERE name = ?", (stamp, name))
                return False
            # Health reasons carry measurements (free GiB, seconds of skew): a new figure is not news.
            changed = row["disabled_by"] != by
            db.execute("UPDATE nodes SET disabled_by = ?, disabled_reason = ?, disabled_at = ?, checked_at = ?,"
                       " facts_json = COALESCE(?, facts_json), updated_at = ? WHERE name = ?",
                       (by, reason, stamp if changed else row["disabled_at"], stamp,
                        None if facts is None else json.dumps(facts, sort_keys=True), stamp, name))
            if changed:
                _event(db, "node_disabled", detail={"node": name, "by": by, "reason": reason})
        return changed

    def set_node_in(self, name: str, by: str, facts: dict | None = None) -> bool:
        """``name`` passed ``by``'s check: put it back if ``by`` (or bootstrap) took it out; True if it was out."""
        stamp = now()
        with self.transaction() as db:
            row = _node_row(db, name, stamp)
            was_out = row["disabled_by"] is not None
            # A health check cannot undo a failed bootstrap: only a bootstrap that passes can.
            back = was_out and (by == "bootstrap" or row["disabled_by"] == by)
            db.execute("UPDATE nodes SET checked_at = ?, facts_json = COALESCE(?, facts_json), updated_at = ?"
                       + (", disabled_by = NULL, disabled_reason = NULL, disabled_at = NULL" if back else "")
                       + " WHERE name = ?",
                       (stamp, None if facts is None else json.dumps(facts, sort_keys=True), stamp, name))
            if back:
                _event(db, "node_enabled", detail={"node": name, "by": by, "was": row["disabled_reason"]})
        return back

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
        stamp = now()
        with self.transaction() as db:
            project_row = db.execute("SELECT config_hash FROM projects WHERE name = ?", (config.name,)).fetchone()
            if project_row is None or project_row["config_hash"] != config.config_hash:
                result.project_changed = True
                db.execute(
                    "INSERT INTO projects (name, folder, repository, base_branch, config_json, config_hash, created_at,"
                    " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET folder = excluded.folder,"
                    " repository = excluded.repository, base_branch = excluded.base_branch,"
                    " config_json = excluded.config_json, config_hash = excluded.config_hash,"
                    " updated_at = excluded.updated_at",
                    (config.name, str(config.folder), config.repository, config.base_branch,
                     json.dumps(config.raw, sort_keys=True, default=str), config.config_hash, stamp, stamp))
                _event(db, "project_configured", config.name, detail={"config_hash": config.config_hash})
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
                if task_id in report.specs or not row["file_present"]:
                    continue
                result.removed.append(task_id)
                db.execute("UPDATE specs SET file_present = 0, updated_at = ? WHERE project = ? AND task_id = ?",
                           (stamp, config.name, task_id))
                _event(db, "spec_file_removed", config.name, task_id, detail={"path": row["path"]})
                if row["state"] in (SpecState.QUEUED.value, SpecState.BLOCKED.value):
                    self._transition(db, config.name, task_id, SpecState.CANCELLED,
                                     reason=f"spec file {row['path']} was removed")
            if dry_run:
                raise _DryRun(result)
        return result

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

    # -- usage, finely grouped for reports -------------------------------------------------

    def usage_rows(self, project: str | None = None, since: float | None = None, until: float | None = None,
                   run_id: str | None = None) -> list[dict]:
        """Tokens and cost of collected attempts per project, spec, executor, node and UTC day: one query.

        The attempts and sums of :meth:`usage` (``executor`` recorded, ``started_at`` in
        ``[since, until)``), grouped finely enough that every breakdown a report shows is a
        sum of these rows (:func:`specfleet.report.usage.rollup`). ``cost_unknown`` counts the
        attempts with no cost recorded; ``run_id`` keeps one dispatch run's attempts.
        """
        where, args = ["executor IS NOT NULL"], []
        for clause, value in (("project = ?", project), ("started_at >= ?", since), ("started_at < ?", until),
                              ("run_id = ?", run_id)):
            if value is not None:
                where.append(clause)
                args.append(value)
        rows = self.db.execute(
            "SELECT project, task_id, executor, node, date(started_at, 'unixepoch') AS day, COUNT(*) AS attempts,"
            " SUM(COALESCE(input_tokens, 0)) AS input_tokens, SUM(COALESCE(output_tokens, 0)) AS output_tokens,"
            " SUM(cost_usd) AS cost_usd, SUM(cost_usd IS NULL) AS cost_unknown FROM attempts"
            f" WHERE {' AND '.join(where)} GROUP BY project, task_id, executor, node, day"
            " ORDER BY project, task_id, executor, node, day", args)
        return [dict(r) for r in rows]


class _DryRun(Exception):
    def __init__(self, result: FeedResult):
        super().__init__("dry run")
        self.result = result


def _statements(script: str) -> list[str]:
    """Split a migration into statements (``CREATE TRIGGER ... END;`` kept whole)."""
    statements, buffer = [], ""
    for line in script.strip().splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    if buffer.strip():
        raise StoreError(f"incomplete SQL in migration: {buffer.strip()[:60]}")
    return statements


def _node_row(db: sqlite3.Connection, name: str, stamp: float) -> sqlite3.Row:
    """The node's row, made (0 slots until a dispatch records the inventory's) when new."""
    db.execute("INSERT INTO nodes (name, slots, updated_at) VALUES (?, 0, ?) ON CONFLICT(name) DO NOTHING",
               (name, stamp))
    return db.execute("SELECT * FROM nodes WHERE name = ?", (name,)).fetchone()


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
