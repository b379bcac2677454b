# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The schema: every migration in order, and how a database is brought up to date.

The schema is versioned with ``PRAGMA user_version``; :data:`MIGRATIONS` upgrade it in one
exclusive transaction, and a database newer than this code is refused. A new table or
column is a new migration appended here, never an edit of an old one.
"""
from __future__ import annotations

import sqlite3

from specfleet.store.base import StoreError
from specfleet.store.base import event as _event

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
    (10, "what a dispatch run's specs run (agents or plain jobs), recorded once at feed", """
ALTER TABLE runs ADD COLUMN work TEXT;
"""),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]


class SchemaMigrations:
    """A mixin of :class:`~specfleet.store.core.Store`: the schema version and :meth:`migrate`."""

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
