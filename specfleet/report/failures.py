# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The failures' figures: node and after-node failures by executor and node, and the rate-limit fallbacks."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from specfleet.model.ending import FAILURE_CATEGORIES
from specfleet.model.states import SpecState
from specfleet.store.core import Store

STATUS_MAX_BYTES = 4 * 1024 * 1024  # a status.json larger than this is not read
REASON_WIDTH = 120

# A spec failure found after the node: the state it left -> the stage that found it.
AFTER_NODE = {"completed": "verify", "verified": "merge", "conflict": "merge", "in_review": "review", "merged": "review"}
# Sent back for something else's sake: a new revision of the spec, a dependency rejected in review.
NOT_ITS_FAULT = ("spec revised", "dependency ")


def reason_key(reason: str | None) -> str:
    """A failure reason's first line, whitespace collapsed, cut to REASON_WIDTH: what failures are grouped by."""
    first = next((line for line in (reason or "").splitlines() if line.strip()), "")
    text = " ".join(first.split()).rstrip(":").rstrip() or "(no reason recorded)"
    return text if len(text) <= REASON_WIDTH else text[:REASON_WIDTH - 1] + "…"


def failure_figures(store: Store, project: str, started: list[dict], timelines: dict, day_start: float,
              day_end: float) -> dict[str, Any]:
    items = []
    for row in started:
        if row["category"] in FAILURE_CATEGORIES:
            items.append({"stage": "node", "task_id": row["task_id"], "attempt": row["number"],
                          "category": row["category"], "executor": row["executor_name"],
                          "node": row["node"] or "(no node)", "reason": reason_key(row["reason"])})
    producers = store.succeeded_attempts(project)
    for task_id, line in sorted(timelines.items()):
        previous = None
        for when, to_state, reason in line:
            stage = AFTER_NODE.get(previous or "")
            if (day_start <= when < day_end and stage and to_state in (SpecState.QUEUED.value, SpecState.FAILED.value)
                    and reason and not reason.startswith(NOT_ITS_FAULT)):
                # The attempt whose branch was sent back: the spec's last success before it.
                producer = next((p for p in reversed(producers) if p["task_id"] == task_id and p["ended_at"] <= when),
                                None)
                items.append({"stage": stage, "task_id": task_id, "attempt": producer["number"] if producer else None,
                              "category": "failed", "executor": (producer or {}).get("executor") or "(not recorded)",
                              "node": (producer or {}).get("node") or "(no node)", "reason": reason_key(reason)})
            previous = to_state
    attempts_by = {"executor": Counter(a["executor_name"] for a in started),
                   "node": Counter(a["node"] or "(no node)" for a in started)}
    grouped = {}
    for key in ("executor", "node"):
        groups = []
        for name in sorted(set(attempts_by[key]) | {i[key] for i in items}):
            mine = [i for i in items if i[key] == name]
            groups.append({key: name, "attempts": attempts_by[key].get(name, 0),
                           "node_failures": sum(1 for i in mine if i["stage"] == "node"),
                           "after_node": sum(1 for i in mine if i["stage"] != "node"), "failures": len(mine),
                           "reasons": [{"reason": r, "count": n} for r, n in
                                       sorted(Counter(i["reason"] for i in mine).items(), key=lambda x: (-x[1], x[0]))]})
        grouped[f"by_{key}"] = groups
    return {"total": len(items), "items": items, **grouped,
            "by_stage": dict(sorted(Counter(i["stage"] for i in items).items())),
            "by_category": dict(sorted(Counter(i["category"] for i in items).items()))}


def status_rounds(row: dict) -> list | None:
    """The rounds (with their executor tries) the runner recorded for an attempt, if the controller has them."""
    try:
        stored = json.loads(row.get("result_json") or "{}")
    except ValueError:
        stored = {}
    if isinstance(stored, dict) and isinstance(stored.get("rounds"), list):
        return stored["rounds"]
    if not row.get("artifacts"):
        return None
    path = Path(row["artifacts"]) / "status.json"
    try:
        if not path.is_file() or path.stat().st_size > STATUS_MAX_BYTES:
            return None
        status = json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except (OSError, ValueError):
        return None
    rounds = status.get("rounds") if isinstance(status, dict) else None
    return rounds if isinstance(rounds, list) else None


def rate_limit_figures(started: list[dict]) -> dict[str, Any]:
    limited: Counter[str] = Counter()
    fallbacks: Counter[str] = Counter()
    read = hit = exhausted = 0
    for row in started:
        rounds = status_rounds(row)
        if rounds is None:
            continue
        read += 1
        attempt_hit = False
        for record in rounds:
            tries = [t for t in (record.get("tries") or []) if isinstance(t, dict)] if isinstance(record, dict) else []
            for index, attempt_try in enumerate(tries):
                if not attempt_try.get("rate_limited"):
                    continue
                attempt_hit = True
                limited[str(attempt_try.get("executor"))] += 1
                if index + 1 < len(tries):
                    fallbacks[f"{attempt_try.get('executor')} → {tries[index + 1].get('executor')}"] += 1
            if tries and all(t.get("rate_limited") for t in tries):
                exhausted += 1
        hit += attempt_hit
    return {"attempts": len(started), "attempts_read": read, "attempts_rate_limited": hit,
            "tries_rate_limited": dict(sorted(limited.items())), "fallbacks": dict(sorted(fallbacks.items())),
            "fallbacks_total": sum(fallbacks.values()), "chain_exhausted": exhausted,
            "source": "each attempt's status.json among its collected artifacts (executor tries per round)"}
