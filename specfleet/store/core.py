# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The state store: one SQLite database (WAL) shared by every dispatch run on a controller.

Rules every writer follows:

* Times are UTC epoch seconds (``REAL``), from :func:`specfleet.store.base.now`.
* A spec's state changes only through :meth:`Store.transition`, which checks
  :data:`~.states.TRANSITIONS` and does a compare-and-set on ``(state, version)`` inside
  ``BEGIN IMMEDIATE``, so of two processes racing for the same change exactly one wins.
* Every change writes an event in the same transaction. Events are append-only
  (triggers refuse UPDATE and DELETE).
* The schema is versioned with ``PRAGMA user_version``; :data:`MIGRATIONS` upgrade it in
  one exclusive transaction, and a database newer than this code is refused.

``Store`` is composed of one mixin per aggregate, each in its own module: ``schema``
(migrations), ``specs`` (feed, revisions, transitions, rescue, lessons), ``attempts``,
``runs``, ``nodes``, ``leases`` (slot leases, path locks, leftovers), and the read views
``landing``, ``reports`` and ``progress``. Store code reads the clock as ``base.now()``,
so patching :func:`specfleet.store.base.now` moves every timestamp.
"""
from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from specfleet.store import base
from specfleet.store.attempts import AttemptQueries
from specfleet.store.base import event as _event
from specfleet.store.landing import LandingQueries
from specfleet.store.leases import LeaseQueries
from specfleet.store.nodes import NodeQueries
from specfleet.store.progress import ProgressQueries
from specfleet.store.reports import ReportQueries
from specfleet.store.runs import RunQueries
from specfleet.store.schema import MIGRATIONS, SCHEMA_VERSION, SchemaMigrations
from specfleet.store.specs import FeedResult, SpecQueries, SpecRow

# Other packages import these from here; the clock is store.base.now (patch that one).
StoreError = base.StoreError
StaleState = base.StaleState
__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "FeedResult", "SpecRow", "StaleState", "Store", "StoreError"]


class Store(SchemaMigrations, SpecQueries, AttemptQueries, RunQueries, NodeQueries, LeaseQueries, LandingQueries,
            ReportQueries, ProgressQueries):
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
        """``BEGIN IMMEDIATE`` takes the write lock up front, so read-check-write is atomic.

        Re-entrant: inside an open transaction it joins it (the outermost one commits or
        rolls back), so a caller can run several store methods as one atomic step, as the
        lease book's grant pass does.
        """
        if self.db.in_transaction:
            yield self.db
            return
        self.db.execute(f"BEGIN {mode}")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

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

    def record_event(self, kind: str, project: str | None = None, task_id: str | None = None,
                     run_id: str | None = None, detail: dict | None = None) -> None:
        """Append one event that goes with no other change (e.g. a late result ignored)."""
        with self.transaction() as db:
            _event(db, kind, project, task_id, run_id, detail=detail)

    def last_event_id(self) -> int | None:
        """The newest event's id: any write since a reader last looked changes it."""
        return self.db.execute("SELECT MAX(id) FROM events").fetchone()[0]
