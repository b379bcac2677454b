# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Nodes: the store's row of each worker node; taken out and put back by the health guardian and bootstrap."""
from __future__ import annotations

import json
import sqlite3
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


def _node_row(db: sqlite3.Connection, name: str, stamp: float) -> sqlite3.Row:
    """The node's row, made (0 slots until a dispatch records the inventory's) when new."""
    db.execute("INSERT INTO nodes (name, slots, updated_at) VALUES (?, 0, ?) ON CONFLICT(name) DO NOTHING",
               (name, stamp))
    return db.execute("SELECT * FROM nodes WHERE name = ?", (name,)).fetchone()
