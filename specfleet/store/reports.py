# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The store's reads and writes for the daily report, the run report, status and usage (specfleet.report, specfleet.ops.cli).

A mixin of :class:`specfleet.store.core.Store`: methods use ``self.db`` (an ``sqlite3``
connection with ``sqlite3.Row`` rows) and ``self.transaction()``. Every method here only
reads, and returns plain dicts (or values), never rows, so callers hold no cursor.
"""
from __future__ import annotations

import sqlite3
from typing import Any


class ReportQueries:
    db: sqlite3.Connection

    # -- the daily report -----------------------------------------------------------------------

    def has_project(self, project: str) -> bool:
        """Whether any spec of ``project`` was ever fed."""
        return self.db.execute("SELECT 1 FROM specs WHERE project = ? LIMIT 1", (project,)).fetchone() is not None

    def spec_executors(self, project: str) -> dict[str, str | None]:
        """Each spec's own ``executor`` field (``None`` where the spec names none)."""
        return {r["task_id"]: r["executor"]
                for r in self.db.execute("SELECT task_id, executor FROM specs WHERE project = ?", (project,))}

    def attempts_during(self, project: str, start: float, end: float) -> list[dict[str, Any]]:
        """Every attempt that ran during ``[start, end)``: started before ``end``, not ended before ``start``."""
        return [dict(r) for r in self.db.execute(
            "SELECT * FROM attempts WHERE project = ? AND started_at < ? AND (ended_at IS NULL OR ended_at >= ?)"
            " ORDER BY started_at, id", (project, end, start))]

    def state_changes(self, project: str) -> list[dict[str, Any]]:
        """Every spec state change of ``project`` in order: ``ts``, ``task_id``, ``to_state``, ``detail_json``."""
        return [dict(r) for r in self.db.execute(
            "SELECT ts, task_id, to_state, detail_json FROM events WHERE project = ? AND"
            " task_id IS NOT NULL AND to_state IS NOT NULL ORDER BY id", (project,))]

    def merges_of(self, project: str) -> list[dict[str, Any]]:
        """Every merge of ``project`` onto integration, oldest first (with when it was promoted or reverted)."""
        return [dict(r) for r in self.db.execute("SELECT * FROM merges WHERE project = ? ORDER BY merged_at, id",
                                                 (project,))]

    def nodes_in_inventory(self) -> list[dict[str, Any]]:
        """Every node by name: its ``slots``, ``enabled`` and whether (and when) it was taken out."""
        return [dict(r) for r in self.db.execute(
            "SELECT name, slots, enabled, disabled_by, disabled_at FROM nodes ORDER BY name")]

    def first_attempt_starts(self, project: str) -> dict[str, float]:
        """When each spec's first attempt started."""
        return {r["task_id"]: r["first"] for r in self.db.execute(
            "SELECT task_id, MIN(started_at) AS first FROM attempts WHERE project = ? GROUP BY task_id", (project,))}

    def succeeded_attempts(self, project: str) -> list[dict[str, Any]]:
        """The attempts that produced a branch, by end: ``task_id``, ``number``, ``node``, ``ended_at`` and
        ``executor`` (the attempt's, else the spec's)."""
        return [dict(r) for r in self.db.execute(
            "SELECT a.task_id, a.number, a.node, a.ended_at, COALESCE(a.executor, s.executor) AS executor FROM"
            " attempts a LEFT JOIN specs s ON s.project = a.project AND s.task_id = a.task_id WHERE a.project = ?"
            " AND a.outcome = 'succeeded' ORDER BY a.ended_at", (project,))]

    # -- status (specfleet status) --------------------------------------------------------------

    def leases_per_node(self) -> dict[str, int]:
        """How many slot leases each node holds now."""
        return {r["node"]: r["n"] for r in self.db.execute("SELECT node, count(*) AS n FROM slot_leases GROUP BY node")}

    def nodes_by_priority(self) -> list[dict[str, Any]]:
        """Every node's row, in the order the scheduler prefers them (priority, then name)."""
        return [dict(r) for r in self.db.execute("SELECT * FROM nodes ORDER BY priority, name")]

    def fleet_rows(self) -> list[dict[str, Any]]:
        """What the scheduler knows of each node: ``name``, ``slots``, ``priority``, ``labels_json``, ``enabled``."""
        return [dict(r) for r in self.db.execute("SELECT name, slots, priority, labels_json, enabled FROM nodes")]

    def state_counts(self, project: str | None = None) -> dict[str, dict[str, int]]:
        """Specs per state of each project (or of ``project`` only): ``{project: {state: count}}``."""
        where, params = ("WHERE project = ?", (project,)) if project else ("", ())
        counts: dict[str, dict[str, int]] = {}
        for row in self.db.execute(f"SELECT project, state, count(*) AS n FROM specs {where} GROUP BY project, state",
                                   params):
            counts.setdefault(row["project"], {})[row["state"]] = row["n"]
        return counts

    def running_leases(self, project: str | None = None) -> list[dict[str, Any]]:
        """The slot leases held now (of ``project`` only, if given), oldest first, with their attempt's ``number``."""
        params = (project,) if project else ()
        return [dict(r) for r in self.db.execute(
            "SELECT l.project, l.task_id, l.node, l.slot, l.acquired_at, a.number FROM slot_leases l "
            "LEFT JOIN attempts a ON a.id = l.attempt_id"
            + (" WHERE l.project = ?" if project else "") + " ORDER BY l.acquired_at", params)]

    def specs_in_states(self, states: tuple[str, ...], project: str | None = None) -> list[dict[str, Any]]:
        """``project``, ``task_id``, ``state`` and ``reason`` of the specs in ``states`` (of every project, or one)."""
        params = (*states, project) if project else states
        return [dict(r) for r in self.db.execute(
            f"SELECT project, task_id, state, reason FROM specs WHERE state IN ({', '.join('?' * len(states))})"
            + (" AND project = ?" if project else "") + " ORDER BY project, task_id", params)]

    def queue_rows(self, project: str) -> dict[str, dict[str, Any]]:
        """Each spec of ``project`` by id: its ``state``, ``depends_on_json`` and ``priority``."""
        return {r["task_id"]: dict(r) for r in self.db.execute(
            "SELECT task_id, state, depends_on_json, priority FROM specs WHERE project = ?", (project,))}

    # -- the run report (specfleet.ops.controller.run_report) -------------------------------------

    def attempt_counts_of_run(self, run_id: str) -> dict[str, int]:
        """How many attempts each spec had in the dispatch run ``run_id``."""
        return {r["task_id"]: r["n"] for r in self.db.execute(
            "SELECT task_id, COUNT(*) AS n FROM attempts WHERE run_id = ? GROUP BY task_id", (run_id,))}
