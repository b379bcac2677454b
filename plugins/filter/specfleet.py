# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters of specfleet's playbooks."""
from __future__ import annotations

import sys
from pathlib import Path

_CORE = str(Path(__file__).resolve().parents[1] / "module_utils")
if _CORE not in sys.path:
    sys.path.insert(0, _CORE)

from specfleet import health  # noqa: E402


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
