# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters of specfleet's playbooks."""
from __future__ import annotations

from specfleet.ops import health


def health_table(results):
    """The health guardian's table from each node's ``specfleet_health`` result (one line per node)."""
    rows = []
    for result in results:
        line = (result or {}).get("line")
        if line:
            rows.append(tuple(map(str, line)))
    return health.table(rows)


class FilterModule:
    def filters(self):
        return {"specfleet_health_table": health_table}
