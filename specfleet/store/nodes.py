# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Nodes: the store's row of each worker node; taken out and put back by the health guardian and bootstrap."""
from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from typing import Any

from specfleet.store import base
from specfleet.store.base import event as _event


class NodeQueries:
    """A mixin of :class:`~specfleet.store.core.Store`: node rows, taken out and put back."""

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
        stamp = base.now()
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
        stamp = base.now()
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

    # -- the dispatch's view: inventory, quarantine, availability ----------------------------

    def record_inventory(self, nodes: Iterable[Any], stamp: float) -> None:
        """Record the inventory's view of each node (``name``, ``slots``, ``enabled``, ``priority``,
        ``labels``, as :class:`~specfleet.dispatch.policy.NodeInfo` has them); health is kept."""
        with self.transaction() as db:
            db.executemany(
                "INSERT INTO nodes (name, slots, enabled, priority, labels_json, updated_at) VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT(name) DO UPDATE SET slots = excluded.slots, enabled = excluded.enabled,"
                " priority = excluded.priority, labels_json = excluded.labels_json, updated_at = excluded.updated_at",
                [(n.name, n.slots, int(n.enabled), n.priority, json.dumps(sorted(n.labels)), stamp) for n in nodes])

    def node_inventory(self) -> list[dict[str, Any]]:
        """What :meth:`record_inventory` last recorded of each node: ``name``, ``slots``, ``priority``,
        ``labels`` (a list), ``enabled``; ``NodeInfo.from_row`` turns a row back into a node."""
        return [{"name": r["name"], "slots": r["slots"], "priority": r["priority"],
                 "labels": json.loads(r["labels_json"] or "[]"), "enabled": bool(r["enabled"])}
                for r in self.db.execute("SELECT name, slots, priority, labels_json, enabled FROM nodes")]

    def node_failures(self, name: str) -> int:
        """How many times in a row ``name`` failed (0 for a node the store does not know)."""
        row = self.db.execute("SELECT failures FROM nodes WHERE name = ?", (name,)).fetchone()
        return row["failures"] if row else 0

    def set_node_quarantined(self, name: str, reason: str, failures: int, until: float, stamp: float,
                             run_id: str | None) -> None:
        with self.transaction() as db:
            db.execute("UPDATE nodes SET health = 'quarantined', health_reason = ?, failures = ?, quarantined_until = ?,"
                       " updated_at = ? WHERE name = ?", (reason, failures, until, stamp, name))
            _event(db, "node_quarantined", run_id=run_id, detail={"node": name, "reason": reason,
                                                                  "failures": failures, "until": until})

    def set_node_healthy(self, name: str, by: str, run_id: str | None) -> None:
        """``name`` works: its quarantine ends (event ``node_readmitted`` naming ``by`` if it was quarantined)."""
        with self.transaction() as db:
            row = db.execute("SELECT health FROM nodes WHERE name = ?", (name,)).fetchone()
            db.execute("UPDATE nodes SET health = 'healthy', health_reason = NULL, failures = 0, quarantined_until = NULL,"
                       " last_seen_at = ?, updated_at = ? WHERE name = ?", (base.now(), base.now(), name))
            if row is not None and row["health"] == "quarantined":
                _event(db, "node_readmitted", run_id=run_id, detail={"node": name, "by": by})

    def unavailable_nodes(self, stamp: float) -> set[str]:
        """Nodes no spec may start on now: disabled in the inventory, taken out, or quarantined."""
        rows = self.db.execute("SELECT name FROM nodes WHERE enabled = 0 OR disabled_by IS NOT NULL OR"
                               " (health = 'quarantined' AND quarantined_until > ?)", (stamp,))
        return {r["name"] for r in rows}

    def taken_out_nodes(self) -> dict[str, str]:
        """Nodes bootstrap or the health guardian took out: name -> ``by: reason``."""
        return {r["name"]: f"{r['disabled_by']}: {r['disabled_reason']}" for r in self.db.execute(
            "SELECT name, disabled_by, disabled_reason FROM nodes WHERE disabled_by IS NOT NULL")}


def _node_row(db: sqlite3.Connection, name: str, stamp: float) -> sqlite3.Row:
    """The node's row, made (0 slots until a dispatch records the inventory's) when new."""
    db.execute("INSERT INTO nodes (name, slots, updated_at) VALUES (?, 0, ?) ON CONFLICT(name) DO NOTHING",
               (name, stamp))
    return db.execute("SELECT * FROM nodes WHERE name = ?", (name,)).fetchone()
