# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Runs: the dispatch (and other) runs that own leases, their heartbeats, owners and stop requests."""
from __future__ import annotations


class RunQueries:
    """A mixin of :class:`~specfleet.store.core.Store`: runs."""

    def open_runs_of(self, host: str, pid: int) -> list[str]:
        """Runs process ``pid`` on ``host`` opened and has not closed."""
        return [r["id"] for r in self.db.execute("SELECT id FROM runs WHERE ended_at IS NULL AND owner_host = ?"
                                                 " AND owner_pid = ? ORDER BY started_at", (host, pid))]
