# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Attempts: what each one produced, and the tokens and cost agents used, summed for reports."""
from __future__ import annotations

import json
from typing import Any

from specfleet.store.base import StoreError
from specfleet.store.base import event as _event


def _int_or_none(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def _float_or_none(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


class AttemptQueries:
    """A mixin of :class:`~specfleet.store.core.Store`: recording attempts and summing their usage."""

    def record_attempt(self, project: str, task_id: str, number: int, *, executor: str | None = None,
                       branch: str | None = None, commit_sha: str | None = None, rounds: int | None = None,
                       artifacts: str | None = None, result: dict | None = None, usage: dict | None = None,
                       tries: list[dict] | None = None) -> None:
        """What attempt ``number`` produced (its outcome is set when its lease ends).

        ``usage``: the runner's sum over every agent try (``input_tokens``, ``output_tokens``,
        ``cost_usd``, ``models``); ``tries``: each executor tried, in order, and how it ended.
        """
        spent = usage or {}
        models = [str(m) for m in spent.get("models") or [] if m]
        with self.transaction() as db:
            db.execute("UPDATE attempts SET executor = ?, branch = ?, commit_sha = ?, rounds = ?, artifacts = ?,"
                       " result_json = ?, model = ?, input_tokens = ?, output_tokens = ?, cost_usd = ?, tries_json = ?"
                       " WHERE project = ? AND task_id = ? AND number = ?",
                       (executor, branch, commit_sha, rounds, artifacts,
                        json.dumps(result or {}, sort_keys=True, ensure_ascii=False), ", ".join(models) or None,
                        _int_or_none(spent.get("input_tokens")), _int_or_none(spent.get("output_tokens")),
                        _float_or_none(spent.get("cost_usd")),
                        json.dumps(tries or [], sort_keys=True, ensure_ascii=False), project, task_id, number))
            _event(db, "attempt_collected", project, task_id,
                   detail={"attempt": number, "executor": executor, "commit": commit_sha, "rounds": rounds,
                           "input_tokens": _int_or_none(spent.get("input_tokens")),
                           "output_tokens": _int_or_none(spent.get("output_tokens")),
                           "cost_usd": _float_or_none(spent.get("cost_usd"))})

    def usage(self, project: str | None = None, since: float | None = None, until: float | None = None,
              by: str = "executor") -> list[dict]:
        """Tokens and cost of collected attempts, summed per ``by`` (executor, node, task_id, model or day).

        ``day`` is the UTC date an attempt started. Attempts with no usage recorded count
        as attempts but add nothing; ``cost_usd`` is None when no attempt of a group had one.
        """
        keys = {"executor": "executor", "node": "node", "task_id": "task_id", "model": "model",
                "day": "date(started_at, 'unixepoch')", "project": "project"}
        if by not in keys:
            raise StoreError(f"usage can be summed by {', '.join(keys)}, not {by!r}")
        where, args = ["executor IS NOT NULL"], []
        for clause, value in (("project = ?", project), ("started_at >= ?", since), ("started_at < ?", until)):
            if value is not None:
                where.append(clause)
                args.append(value)
        rows = self.db.execute(
            f"SELECT {keys[by]} AS key, COUNT(*) AS attempts, SUM(COALESCE(input_tokens, 0)) AS input_tokens,"
            f" SUM(COALESCE(output_tokens, 0)) AS output_tokens, SUM(cost_usd) AS cost_usd FROM attempts"
            f" WHERE {' AND '.join(where)} GROUP BY key ORDER BY key", args)
        return [{by: r["key"], "attempts": r["attempts"], "input_tokens": r["input_tokens"],
                 "output_tokens": r["output_tokens"],
                 "cost_usd": round(r["cost_usd"], 6) if r["cost_usd"] is not None else None} for r in rows]


    def usage_rows(self, project: str | None = None, since: float | None = None, until: float | None = None,
                   run_id: str | None = None) -> list[dict]:
        """Tokens and cost of collected attempts per project, spec, executor, node and UTC day: one query.

        The attempts and sums of :meth:`usage` (``executor`` recorded, ``started_at`` in
        ``[since, until)``), grouped finely enough that every breakdown a report shows is a
        sum of these rows (:func:`specfleet.report.usage.rollup`). ``cost_unknown`` counts the
        attempts with no cost recorded; ``run_id`` keeps one dispatch run's attempts.
        """
        where, args = ["executor IS NOT NULL"], []
        for clause, value in (("project = ?", project), ("started_at >= ?", since), ("started_at < ?", until),
                              ("run_id = ?", run_id)):
            if value is not None:
                where.append(clause)
                args.append(value)
        rows = self.db.execute(
            "SELECT project, task_id, executor, node, date(started_at, 'unixepoch') AS day, COUNT(*) AS attempts,"
            " SUM(COALESCE(input_tokens, 0)) AS input_tokens, SUM(COALESCE(output_tokens, 0)) AS output_tokens,"
            " SUM(cost_usd) AS cost_usd, SUM(cost_usd IS NULL) AS cost_unknown FROM attempts"
            f" WHERE {' AND '.join(where)} GROUP BY project, task_id, executor, node, day"
            " ORDER BY project, task_id, executor, node, day", args)
        return [dict(r) for r in rows]

    def attempt_id(self, project: str, task_id: str, number: int) -> int | None:
        """The row id of ``task_id``'s attempt ``number``, or None when no run recorded it."""
        row = self.db.execute("SELECT id FROM attempts WHERE project = ? AND task_id = ? AND number = ?",
                              (project, task_id, number)).fetchone()
        return row["id"] if row else None

    def attempts_per_spec(self, run_id: str) -> dict[str, int]:
        """How many attempts run ``run_id`` made of each spec."""
        return {r["task_id"]: r["n"] for r in self.db.execute(
            "SELECT task_id, COUNT(*) AS n FROM attempts WHERE run_id = ? GROUP BY task_id", (run_id,))}
