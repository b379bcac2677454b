# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Runs: the dispatch (and other) runs that own leases, their heartbeats, owners and stop requests.

Only reads and writes: whether a run is dead, and whether another one may start, is
decided by :mod:`specfleet.dispatch.runs`.
"""
from __future__ import annotations

from collections.abc import Mapping

from specfleet.model.states import RunKind
from specfleet.store.base import event as _event


class RunQueries:
    """A mixin of :class:`~specfleet.store.core.Store`: runs."""

    def open_runs_of(self, host: str, pid: int) -> list[str]:
        """Runs process ``pid`` on ``host`` opened and has not closed."""
        return [r["id"] for r in self.db.execute("SELECT id FROM runs WHERE ended_at IS NULL AND owner_host = ?"
                                                 " AND owner_pid = ? ORDER BY started_at", (host, pid))]

    def run_row(self, run_id: str) -> dict | None:
        row = self.db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        return dict(row) if row else None

    def run_kind(self, run_id: str | None) -> RunKind | None:
        """What run ``run_id``'s specs run, as its feed recorded it (None: not recorded)."""
        row = self.db.execute("SELECT work FROM runs WHERE id = ?", (run_id,)).fetchone() if run_id else None
        return RunKind(row["work"]) if row and row["work"] else None

    def open_runs_other_than(self, run_id: str) -> list[dict]:
        """Every run not ended, except ``run_id``: its heartbeat and owner, to tell whether it lives."""
        return [dict(r) for r in self.db.execute("SELECT id, heartbeat_at, owner_host, owner_pid, owner_started FROM"
                                                 " runs WHERE ended_at IS NULL AND id != ?", (run_id,))]

    def live_dispatch_runs(self, project: str) -> list[dict]:
        """The project's dispatch runs not ended, oldest first as stored."""
        return [dict(r) for r in self.db.execute("SELECT id, owner, started_at, heartbeat_at, stop FROM runs"
                                                 " WHERE project = ? AND kind = 'dispatch' AND ended_at IS NULL",
                                                 (project,))]

    def insert_run(self, run_id: str, project: str | None, kind: str, host: str, pid: int, started: str | None,
                   stamp: float, work: str | None = None) -> None:
        with self.transaction() as db:
            db.execute("INSERT INTO runs (id, project, kind, owner, started_at, heartbeat_at, owner_host, owner_pid,"
                       " owner_started, work) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (run_id, project, kind, f"{host}:{pid}", stamp, stamp, host, pid, started, work))
            _event(db, "run_started", project, run_id=run_id, detail={"kind": kind, "owner": f"{host}:{pid}"})

    def renew_run(self, run_id: str, stamp: float, ttl: float | None = None) -> None:
        """The run's heartbeat; with ``ttl`` also every lease and lock it holds (a leftover's are not renewed)."""
        with self.transaction() as db:
            db.execute("UPDATE runs SET heartbeat_at = ? WHERE id = ?", (stamp, run_id))
            if ttl is not None:
                db.execute("UPDATE slot_leases SET expires_at = ? WHERE run_id = ?", (stamp + ttl, run_id))
                db.execute("UPDATE path_locks SET expires_at = ? WHERE run_id = ? AND leftover IS NULL",
                           (stamp + ttl, run_id))

    def end_run(self, run_id: str, status: str, stamp: float, abandoned: int) -> None:
        """Close the run; its own path locks go (those of its leftovers stay)."""
        with self.transaction() as db:
            db.execute("UPDATE runs SET ended_at = ?, status = ? WHERE id = ?", (stamp, status, run_id))
            db.execute("DELETE FROM path_locks WHERE run_id = ? AND leftover IS NULL", (run_id,))
            _event(db, "run_ended", run_id=run_id, detail={"status": status, "abandoned": abandoned})

    def mark_runs_lost(self, dead: Mapping[str, str], stamp: float, noticed_by: str) -> None:
        """End each dead run (id -> why) as ``lost``."""
        with self.transaction() as db:
            for run_id, why in dead.items():
                db.execute("UPDATE runs SET ended_at = ?, status = 'lost' WHERE id = ?", (stamp, run_id))
                _event(db, "run_lost", run_id=run_id, detail={"noticed_by": noticed_by, "why": why})

    def set_stop(self, project: str, run_id: str, mode: str) -> None:
        with self.transaction() as db:
            db.execute("UPDATE runs SET stop = ? WHERE id = ?", (mode, run_id))
            _event(db, "stop_requested", project, run_id=run_id, detail={"mode": mode})

    def stop_mode(self, run_id: str) -> str | None:
        row = self.db.execute("SELECT stop FROM runs WHERE id = ?", (run_id,)).fetchone()
        return row["stop"] if row else None
