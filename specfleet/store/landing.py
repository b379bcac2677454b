# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The store's reads and writes for the verify stage, the merge queue and review (specfleet.land).

A mixin of :class:`specfleet.store.core.Store`: methods use ``self.db`` (an ``sqlite3``
connection with ``sqlite3.Row`` rows) and ``self.transaction()``; the ones that change a
spec's state go through the store's one transition writer (``_transition``, inside the same
transaction as the rows they record).

The tables: ``checks`` (one row per verify, LLM review, batch test or revert test, with
what it found), ``batches`` (one row per merge-queue batch: ``testing`` until it ends
``landed`` or ``rejected``; ``abandoned`` when a dead queue left it) and ``merges`` (one row
per spec merged on integration, until it is promoted to the base branch or reverted).
"""
from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence

from specfleet.model.states import SpecState
from specfleet.store.base import event, now


def _json(value: object) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


class LandingQueries:
    # -- what verify and the queue read ----------------------------------------------------

    def latest_collected_commit(self, project: str, task_id: str) -> str | None:
        """The commit of the spec's newest succeeded attempt (what verify and the queue land)."""
        row = self.db.execute("SELECT commit_sha FROM attempts WHERE project = ? AND task_id = ? AND commit_sha IS NOT"
                              " NULL AND outcome = 'succeeded' ORDER BY number DESC, id DESC LIMIT 1",
                              (project, task_id)).fetchone()
        return row["commit_sha"] if row else None

    def record_check(self, project: str, task_id: str | None, kind: str, commit: str | None, ok: bool,
                     summary: str, detail: dict, started: float) -> int:
        """One verify, review, batch or revert check that ends now; -> its id."""
        with self.transaction() as db:
            cursor = db.execute("INSERT INTO checks (project, task_id, kind, commit_sha, ok, summary, detail_json,"
                                " started_at, ended_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                (project, task_id, kind, commit, int(ok), summary, _json(detail), started, now()))
            return int(cursor.lastrowid)

    def send_back(self, project: str, task_id: str, reason: str, feedback: str, run_id: str | None,
                  conflict_files: Sequence[str] = ()) -> str:
        """A spec failure found after the node: use an attempt, queue again (or fail); -> new state.

        A merge conflict first moves the spec to ``conflict`` (naming the files), so the
        event log says why it went back; the failure and the feedback become a lesson for
        the next attempt.
        """
        with self.transaction() as db:
            if conflict_files:
                self._transition(db, project, task_id, SpecState.CONFLICT, reason=reason, run_id=run_id,
                                 detail={"files": list(conflict_files)})
            state, blocked = self._spec_failed(db, project, task_id, reason, run_id)
            self._add_lesson(db, project, task_id, None, "failure", (reason + " | " + feedback)[:1500])
        return state.value + (f" (blocked: {', '.join(blocked)})" if blocked else "")

    # -- merge-queue batches ------------------------------------------------------------------

    def open_batch(self, project: str, base: str, members: Sequence[str], started: float,
                   run_id: str | None) -> int:
        """A batch starts ``testing`` on ``base``; -> its id."""
        with self.transaction() as db:
            batch_id = db.execute("INSERT INTO batches (project, base_commit, members_json, status, started_at)"
                                  " VALUES (?, ?, ?, 'testing', ?)",
                                  (project, base, json.dumps(list(members)), started)).lastrowid
            event(db, "batch_started", project, run_id=run_id,
                  detail={"batch": batch_id, "members": list(members), "base": base})
        return int(batch_id)

    def close_batch(self, project: str, batch_id: int, landed: Sequence[str], tip: str | None,
                    conflicts: Sequence[str], broken: Sequence[str], test_runs: int, run_id: str | None) -> None:
        """The batch ends ``landed`` at ``tip`` (something landed) or ``rejected``."""
        with self.transaction() as db:
            db.execute("UPDATE batches SET status = ?, tip_commit = ?, landed_json = ?, rejected_json = ?, test_runs = ?,"
                       " ended_at = ? WHERE id = ?",
                       ("landed" if landed else "rejected", tip if landed else None, json.dumps(list(landed)),
                        json.dumps(sorted({*conflicts, *broken})), test_runs, now(), batch_id))
            event(db, "batch_ended", project, run_id=run_id,
                  detail={"batch": batch_id, "landed": list(landed), "conflicts": sorted(conflicts),
                          "broken": sorted(broken), "test_runs": test_runs})

    def abandon_open_batches(self, project: str) -> None:
        """Batches a dead queue left ``testing`` end ``abandoned`` (a resumed queue's first step)."""
        with self.transaction() as db:
            db.execute("UPDATE batches SET status = 'abandoned', ended_at = ? WHERE project = ? AND status = 'testing'",
                       (now(), project))

    def record_merged(self, project: str, task_id: str, commit: str, merge: str, tested: str,
                      batch_id: int | None, run_id: str | None) -> None:
        """``task_id``'s ``commit`` is on integration as ``merge``, inside the tested commit ``tested``."""
        with self.transaction() as db:
            db.execute("INSERT INTO merges (project, task_id, commit_sha, merge_commit, batch_id, tested_commit, merged_at)"
                       " VALUES (?, ?, ?, ?, ?, ?, ?)", (project, task_id, commit, merge, batch_id, tested, now()))
            self._transition(db, project, task_id, SpecState.MERGED, reason=None, run_id=run_id,
                             detail={"commit": commit, "merge": merge, "integration": tested})

    # -- review ------------------------------------------------------------------------------

    def unreviewed_merges(self, project: str) -> list[sqlite3.Row]:
        """Merges on integration neither promoted nor reverted, oldest first."""
        return self.db.execute("SELECT * FROM merges WHERE project = ? AND promoted_at IS NULL AND reverted_at IS NULL"
                               " ORDER BY id", (project,)).fetchall()

    def latest_check(self, project: str, task_id: str, kind: str) -> sqlite3.Row | None:
        """The spec's newest check of ``kind`` (its ``summary`` and ``ok``), or None."""
        return self.db.execute("SELECT summary, ok FROM checks WHERE project = ? AND task_id = ? AND kind = ?"
                               " ORDER BY id DESC LIMIT 1", (project, task_id, kind)).fetchone()

    def attempt_span(self, project: str, task_id: str) -> tuple[int, float | None]:
        """How many attempts the spec used (infrastructure failures aside) and when the first started."""
        row = self.db.execute("SELECT COUNT(*) AS n, MIN(started_at) AS first FROM attempts WHERE project = ? AND"
                              " task_id = ? AND kind IS NOT 'infra'", (project, task_id)).fetchone()
        return row["n"], row["first"]

    def tested_integration_commits(self, project: str) -> list[str]:
        """Commits a passing batch or revert test put on integration, newest first."""
        return [r["commit_sha"] for r in self.db.execute(
            "SELECT commit_sha FROM checks WHERE project = ? AND kind IN ('batch', 'revert') AND ok = 1 ORDER BY id DESC",
            (project,))]

    def record_promotion(self, project: str, task_ids: Sequence[str], branch: str, old: str | None, target: str,
                         pushed: str | None, run_id: str | None) -> None:
        """``branch`` moved from ``old`` to ``target``, which holds ``task_ids``' merges."""
        with self.transaction() as db:
            for task_id in task_ids:
                db.execute("UPDATE merges SET promoted_at = ?, promoted_commit = ? WHERE project = ? AND task_id = ? AND"
                           " promoted_at IS NULL AND reverted_at IS NULL", (now(), target, project, task_id))
            event(db, "promoted", project, run_id=run_id,
                  detail={"branch": branch, "from": old, "to": target, "specs": list(task_ids), "pushed": pushed})

    def record_rejection(self, project: str, reasons: Mapping[str, str], reverted: str, run_id: str | None) -> None:
        """Each spec of ``reasons`` was reverted from integration (at ``reverted``): queued again.

        The reason is the spec's state reason and a ``review`` lesson for its next attempt.
        """
        with self.transaction() as db:
            for task_id, why in reasons.items():
                db.execute("UPDATE merges SET reverted_at = ?, revert_reason = ? WHERE project = ? AND task_id = ? AND"
                           " reverted_at IS NULL AND promoted_at IS NULL", (now(), why, project, task_id))
                self._transition(db, project, task_id, SpecState.QUEUED, reason=why, run_id=run_id,
                                 detail={"reverted_in": reverted})
                self._add_lesson(db, project, task_id, None, "review", why[:1500])
