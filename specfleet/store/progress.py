# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The store's reads for the progress tracker and the action plugins (specfleet.report.progress, ansible_specfleet).

:class:`ProgressQueries` is a mixin of :class:`specfleet.store.core.Store`: methods use
``self.db`` (an ``sqlite3`` connection with ``sqlite3.Row`` rows) and ``self.transaction()``.
:class:`ReadOnlyStore` carries the same reads over a read-only connection that never
creates, migrates or writes the database: the progress callback reads a store that the
strategy and the workers write.
"""
from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote


@dataclass
class ProgressSnapshot:
    """The specs of a run at one instant, and the newest event id then (see :meth:`ProgressQueries.progress_snapshot`)."""

    cursor: int                      # newest event id when the snapshot was taken
    states: dict[str, str]           # task id -> state
    estimates: dict[str, int]        # task id -> estimate_s
    running_since: dict[str, float]  # task id of a running spec -> when its open attempt started


@dataclass
class CleanupFacts:
    """What cleanup needs to know of a project to judge its attempt directories on a node."""

    repository: str
    remote: bool               # the project's transport is ``remote`` (commits live in a remote)
    attempts: dict             # (task id, number) -> attempts row
    held: set                  # attempt ids holding a slot lease or a leftover
    states: dict[str, str]     # task id -> spec state


class ProgressQueries:
    def progress_snapshot(self, project: str, task_ids: Iterable[str]) -> ProgressSnapshot:
        """The states, estimates and running attempts of ``task_ids`` and the newest event id, in one
        read transaction (WAL): the states and the cursor agree, so no change is missed or shown twice."""
        task_ids = list(task_ids)
        marks = ",".join("?" * len(task_ids)) or "NULL"
        with self.transaction("DEFERRED") as db:
            snapshot = ProgressSnapshot(db.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0], {}, {}, {})
            for task_id, state, estimate_s in db.execute(
                    f"SELECT task_id, state, estimate_s FROM specs WHERE project = ? AND task_id IN ({marks})",
                    (project, *task_ids)):
                snapshot.states[task_id] = state
                snapshot.estimates[task_id] = estimate_s
            for task_id, started in db.execute(
                    f"SELECT task_id, MAX(started_at) FROM attempts WHERE project = ? AND ended_at IS NULL"
                    f" AND task_id IN ({marks}) GROUP BY task_id", (project, *task_ids)):
                if snapshot.states.get(task_id) == "running":
                    snapshot.running_since[task_id] = started
        return snapshot

    def state_changes_since(self, project: str, cursor: int) -> Iterator[tuple[int, float, str, str | None, str, dict]]:
        """The project's ``state`` events after event id ``cursor``, in order:
        ``(id, ts, task_id, from_state, to_state, detail)`` (a detail that is not a JSON object is ``{}``)."""
        rows = self.db.execute(
            "SELECT id, ts, task_id, from_state, to_state, detail_json FROM events"
            " WHERE id > ? AND project = ? AND kind = 'state' ORDER BY id", (cursor, project)).fetchall()
        for event_id, ts, task_id, from_state, to_state, detail in rows:
            try:
                parsed = json.loads(detail or "{}")
            except ValueError:
                parsed = {}
            yield event_id, ts, task_id, from_state, to_state, parsed if isinstance(parsed, dict) else {}

    def slot_usage(self, run_id: str) -> tuple[int, int, int]:
        """(leases held fleet-wide, slots of enabled nodes nobody disabled, leases held by ``run_id``)."""
        used = self.db.execute("SELECT count(*) FROM slot_leases").fetchone()[0]
        total = self.db.execute("SELECT COALESCE(SUM(slots), 0) FROM nodes WHERE enabled = 1"
                                " AND disabled_by IS NULL").fetchone()[0]
        mine = self.db.execute("SELECT count(*) FROM slot_leases WHERE run_id = ?", (run_id,)).fetchone()[0]
        return used, total, mine

    def cleanup_facts(self, project: str) -> CleanupFacts | None:
        """The project's repository, attempts, held attempts and spec states; None for an unknown project."""
        row = self.db.execute("SELECT repository, config_json FROM projects WHERE name = ?", (project,)).fetchone()
        if row is None:
            return None
        attempts = {(a["task_id"], a["number"]): a for a in self.db.execute(
            "SELECT * FROM attempts WHERE project = ?", (project,))}
        held = {r[0] for r in self.db.execute("SELECT attempt_id FROM slot_leases UNION SELECT attempt_id FROM leftovers")}
        states = {r["task_id"]: r["state"] for r in self.db.execute(
            "SELECT task_id, state FROM specs WHERE project = ?", (project,))}
        return CleanupFacts(row["repository"], json.loads(row["config_json"]).get("transport") == "remote",
                            attempts, held, states)


class ReadOnlyStore(ProgressQueries):
    """The reads above over a read-only connection: never creates, migrates or writes the database.

    ``check_same_thread=False``: the progress callback reads from its own thread and from
    Ansible's main thread, one at a time (its lock).
    """

    def __init__(self, path: str | Path, busy_timeout_ms: int = 5000):
        uri = f"file:{quote(str(Path(path).resolve()))}?mode=ro"
        self.db = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=busy_timeout_ms / 1000,
                                  check_same_thread=False)
        self.db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")

    @contextmanager
    def transaction(self, mode: str = "DEFERRED") -> Iterator[sqlite3.Connection]:
        """A read transaction (one snapshot); there is nothing to roll back."""
        self.db.execute(f"BEGIN {mode}")
        try:
            yield self.db
        finally:
            self.db.execute("COMMIT")

    def close(self) -> None:
        self.db.close()
