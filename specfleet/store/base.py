# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What every part of the store shares: the clock, the errors, the event log's one writer."""
from __future__ import annotations

import json
import sqlite3
import time


def now() -> float:
    return time.time()


class StoreError(Exception):
    pass


class StaleState(StoreError):
    """A compare-and-set lost: the spec is no longer in the state (or version) the caller saw."""


def event(db: sqlite3.Connection, kind: str, project: str | None = None, task_id: str | None = None,
          run_id: str | None = None, from_state: str | None = None, to_state: str | None = None,
          detail: dict | None = None) -> None:
    """Append one row to the event log (inside the caller's transaction)."""
    db.execute("INSERT INTO events (ts, project, task_id, run_id, kind, from_state, to_state, detail_json)"
               " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
               (now(), project, task_id, run_id, kind, from_state, to_state,
                json.dumps(detail or {}, sort_keys=True, ensure_ascii=False)))
