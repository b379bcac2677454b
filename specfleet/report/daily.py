# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The daily report: what a project's fleet did on one day, from the state store alone.

:func:`figures` reads the store (events, attempts, specs, merges, nodes) and returns one
JSON-serialisable dict; :func:`markdown` and :func:`html` render it and do no arithmetic
on the store of their own, so the two files always say the same. The HTML file is
self-contained: inline CSS, inline SVG charts, no script, no external address.

Definitions (each is also printed in the report, next to its number):

* **State at the end of the day**: a spec's state after its last state change before the
  end of the day (or before now, for today), replayed from the events.
* **Attempted**: the spec has an attempt that started during the day.
* **Success rate**: among the attempted specs, those whose state at the end of the day is
  ``completed`` or later (``verified``, ``in_review``, ``merged``) divided by those plus
  the ``failed`` ones. Specs still queued, running, in conflict, blocked or cancelled are
  not decided yet and are left out of the denominator (and counted separately).
* **Merged today**: rows of ``merges`` whose ``merged_at`` is in the day. **In review**:
  merged on integration before the end of the day, neither promoted nor reverted by then.
* **Cycle time**: from the spec's first attempt's start to its merge, for the merges of
  the day; median and p90 (nearest rank).
* **Utilisation**: slot-seconds held by attempts / slot-seconds of the nodes in service
  (enabled in the inventory and not taken out before the day, plus any node that ran an
  attempt), per bucket and over the active period (first attempt start to last attempt
  end in the day). Quarantines are not subtracted from the capacity.
* **Failures**: node attempts that ended ``spec_failure`` (failed), ``infra_failure``
  (infra), ``lost``/``abandoned`` (lost), plus spec failures found after the node (controller
  verify, merge conflict or broken batch, rejection in review), charged to the executor
  and node of the attempt that produced the branch. Cancelled (killed) attempts are not
  failures.
* **Rate-limit fallbacks**: the runner records every executor try of every round in the
  attempt's ``status.json``; the store keeps the attempt's artifact folder, and the
  collected copy of that file is read from there (or from ``result_json`` when it holds
  ``rounds``).
* **Tokens and cost**: of the collected attempts (an executor recorded) that started in the
  day, summed per executor (the one that finished the attempt) and per node, exactly as
  :meth:`Store.usage <specfleet.store.core.Store.usage>` sums them. Tokens are what each agent CLI
  printed; the cost is the CLI's own, else the executor's inventory ``prices`` per million
  tokens, else unknown: shown as unknown, never as 0 (see :mod:`specfleet.report.usage`).
"""
from __future__ import annotations

import html as _html
import json
import math
import re
import statistics
import time
from collections import Counter, defaultdict
from datetime import date, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any

from specfleet.model.ending import CATEGORY_ORDER, FAILURE_CATEGORIES, Outcome
from specfleet.model.states import DEPENDENCY_COMPLETED, STATE_ORDER, SpecState
from specfleet.report import usage as spent
from specfleet.store.core import Store, StoreError

OUTCOMES = frozenset(o.value for o in Outcome)
DONE_STATES = frozenset(s.value for s in DEPENDENCY_COMPLETED)
UTILISATION_TARGET = 0.80          # the seeds: keep slots 80 %+ busy
BUCKET_S = 600                      # utilisation buckets: 10 minutes
QUEUE_FACTOR = 2.0                  # queued > 2 x running -> add nodes
FAILURE_RATE_LIMIT = 0.30           # spec-level failure rate > 30 % -> better specs, not nodes
CONFLICT_MIN = 3                    # at least 3 conflicts ...
CONFLICT_SHARE = 0.15               # ... and more than 15 % of the day's merge tries -> split work differently
STATUS_MAX_BYTES = 4 * 1024 * 1024  # a status.json larger than this is not read
REASON_WIDTH = 120

# A spec failure found after the node: the state it left -> the stage that found it.
AFTER_NODE = {"completed": "verify", "verified": "merge", "conflict": "merge", "in_review": "review", "merged": "review"}
# Sent back for something else's sake: a new revision of the spec, a dependency rejected in review.
NOT_ITS_FAULT = ("spec revised", "dependency ")
DAY = re.compile(r"^\d{4}-\d{2}-\d{2}\Z")


class ReportError(StoreError):
    """The report cannot be made (unknown project, bad day)."""


# -- the day ----------------------------------------------------------------------------------

def day_bounds(day: str | None = None, tz: tzinfo | None = None, now: float | None = None) -> tuple[str, float, float]:
    """``(YYYY-MM-DD, start, end)`` of ``day`` (default: today) in ``tz`` (default: local time).

    ``end`` is the next midnight, so a day with a daylight-saving change has 23 or 25 hours.
    """
    if day is None:
        which = datetime.fromtimestamp(time.time() if now is None else now, tz).date()
    else:
        text = str(day).strip()
        if not DAY.match(text):
            raise ReportError(f"day {day!r} is not a date written YYYY-MM-DD")
        try:
            which = date.fromisoformat(text)
        except ValueError as exc:
            raise ReportError(f"day {day!r} is not a date: {exc}") from None
    start = datetime(which.year, which.month, which.day, tzinfo=tz)
    following = which + timedelta(days=1)
    end = datetime(following.year, following.month, following.day, tzinfo=tz)
    return which.isoformat(), start.timestamp(), end.timestamp()


# -- figures --------------------------------------------------------------------------------

def figures(store: Store, project: str, day_start: float, day_end: float, *, now: float | None = None,
            tz: tzinfo | None = None, day: str | None = None, bucket_s: int = BUCKET_S) -> dict[str, Any]:
    """Every number of the report for ``project`` in ``[day_start, day_end)`` (epoch seconds).

    ``now`` (default: the clock) ends a day that is not over and the bars of running
    attempts; ``tz`` (default: local time) is how times are printed.
    """
    stamp = time.time() if now is None else float(now)
    if day_end <= day_start:
        raise ReportError("the day ends before it starts")
    db = store.db
    if db.execute("SELECT 1 FROM specs WHERE project = ? LIMIT 1", (project,)).fetchone() is None:
        raise ReportError(f"no project {project!r} in the state store: feed or dispatch it first")
    until = min(day_end, stamp)  # the end of what the report can know about
    clock = _Clock(tz)
    day = day or clock.date(day_start)

    timelines = _timelines(store, project)
    states = {t: s for t, s in ((t, _state_at(line, until)) for t, line in timelines.items()) if s is not None}
    spec_executor = {r["task_id"]: r["executor"] for r in db.execute("SELECT task_id, executor FROM specs"
                                                                      " WHERE project = ?", (project,))}

    attempts = [dict(r) for r in db.execute(
        "SELECT * FROM attempts WHERE project = ? AND started_at < ? AND (ended_at IS NULL OR ended_at >= ?)"
        " ORDER BY started_at, id", (project, until, day_start))]
    for row in attempts:
        row["executor_name"] = row["executor"] or spec_executor.get(row["task_id"]) or "(not recorded)"
        # An attempt that ended after the reported period was still running at its end.
        ended = row["ended_at"] is not None and row["ended_at"] <= until
        # NULL outcome with no end: running; an outcome this version does not know: lost.
        row["category"] = (Outcome(row["outcome"]).category if row["outcome"] in OUTCOMES else "lost") if ended else "running"
        row["shown_start"] = max(row["started_at"], day_start)
        row["shown_end"] = min(row["ended_at"] if row["ended_at"] is not None else stamp, until)
    started_today = [a for a in attempts if day_start <= a["started_at"] < day_end]
    attempted = sorted({a["task_id"] for a in started_today})

    result: dict[str, Any] = {
        "project": project, "day": day, "day_start": day_start, "day_end": day_end, "until": until,
        "generated_at": stamp, "generated_local": clock.datetime(stamp), "timezone": clock.zone(day_start),
        "complete": stamp >= day_end,
    }
    result["states"] = {s: n for s in STATE_ORDER if (n := sum(1 for v in states.values() if v == s))}
    result["specs_total"] = len(states)
    result["success"] = _success(attempted, states)
    result["merges"] = _merges(store, project, day_start, day_end, until, clock)
    result["blocked"] = [{"task_id": t, "reason": _last_reason(timelines[t], until) or ""}
                         for t in sorted(states) if states[t] == SpecState.BLOCKED.value]
    result["failed"] = [{"task_id": t, "reason": _last_reason(timelines[t], until) or ""}
                        for t in sorted(states) if states[t] == SpecState.FAILED.value]

    lanes, inferred = _lanes(attempts)
    nodes = _capacity(store, attempts, lanes, day_start)
    axis = _axis(attempts, day_start, until, bucket_s, clock)
    result["gantt"] = {
        "lanes": [{"node": n, "slot": s, "label": f"{n} · slot {s}" if n not in inferred else f"{n} · lane {s}"}
                  for n, s in sorted({(n, s) for n, s in lanes.values()} | {(n["name"], i) for n in nodes
                                                                           for i in range(n["slots"])})],
        "inferred_nodes": sorted(inferred),
        "attempts": [_attempt_view(a, lanes[a["id"]], clock) for a in attempts],
        "axis": axis,
    }
    result["utilisation"] = _utilisation(attempts, nodes, axis, bucket_s, clock)
    result["cycle"] = _cycle(store, project, result["merges"]["today"])
    result["attempts_per_spec"] = _attempts_per_spec(started_today)
    result["failures"] = _failures(store, project, started_today, timelines, day_start, day_end)
    result["rate_limits"] = _rate_limits(started_today)
    result["usage"] = _usage(store, project, day_start, until)
    result["queue"] = _queue(timelines, axis, states)
    result["conflicts"] = _conflicts(timelines, day_start, day_end, len(result["merges"]["today"]))
    result["signals"] = _signals(result)
    return result


class _Clock:
    """Prints epoch seconds in the report's time zone."""

    def __init__(self, tz: tzinfo | None):
        self.tz = tz

    def at(self, ts: float) -> datetime:
        moment = datetime.fromtimestamp(ts, self.tz)
        return moment if self.tz is not None else moment.astimezone()

    def date(self, ts: float) -> str:
        return self.at(ts).date().isoformat()

    def hm(self, ts: float) -> str:
        return self.at(ts).strftime("%H:%M")

    def datetime(self, ts: float) -> str:
        return self.at(ts).strftime("%Y-%m-%d %H:%M")

    def zone(self, ts: float) -> str:
        moment = self.at(ts)
        offset = moment.strftime("%z")
        name = moment.tzname() or ""
        return f"{name} (UTC{offset[:3]}:{offset[3:]})" if offset else name


def _timelines(store: Store, project: str) -> dict[str, list[tuple[float, str, str | None]]]:
    """Every spec's state changes ``(ts, state, reason)`` in order, from the events."""
    lines: dict[str, list[tuple[float, str, str | None]]] = defaultdict(list)
    for row in store.db.execute("SELECT ts, task_id, to_state, detail_json FROM events WHERE project = ? AND"
                                " task_id IS NOT NULL AND to_state IS NOT NULL ORDER BY id", (project,)):
        try:
            reason = json.loads(row["detail_json"]).get("reason")
        except (ValueError, AttributeError):
            reason = None
        lines[row["task_id"]].append((row["ts"], row["to_state"], reason if isinstance(reason, str) else None))
    return lines


def _state_at(line: list[tuple[float, str, str | None]], ts: float) -> str | None:
    state = None
    for when, to_state, _reason in line:
        if when > ts:
            break
        state = to_state
    return state


def _last_reason(line: list[tuple[float, str, str | None]], ts: float) -> str | None:
    reason = None
    for when, _state, why in line:
        if when > ts:
            break
        reason = why
    return reason


def _success(attempted: list[str], states: dict[str, str]) -> dict[str, Any]:
    succeeded = [t for t in attempted if states.get(t) in DONE_STATES]
    failed = [t for t in attempted if states.get(t) == SpecState.FAILED.value]
    undecided = {t: states.get(t, "unknown") for t in attempted if t not in succeeded and t not in failed}
    decided = len(succeeded) + len(failed)
    return {"attempted": len(attempted), "succeeded": len(succeeded), "failed": len(failed), "decided": decided,
            "undecided": len(undecided), "undecided_states": dict(Counter(undecided.values())),
            "rate": (len(succeeded) / decided) if decided else None,
            "succeeded_specs": succeeded, "failed_specs": failed,
            "definition": "specs with an attempt started this day whose state at the end of the day is completed, "
                          "verified, in_review or merged, out of those plus the failed ones; specs still queued, "
                          "running, in conflict, blocked or cancelled are not decided and not counted"}


def _merges(store: Store, project: str, day_start: float, day_end: float, until: float, clock: _Clock) -> dict:
    today, review = [], []
    for row in store.db.execute("SELECT * FROM merges WHERE project = ? ORDER BY merged_at, id", (project,)):
        if day_start <= row["merged_at"] < day_end:
            today.append({"task_id": row["task_id"], "merged_at": row["merged_at"],
                          "merged_local": clock.hm(row["merged_at"]),
                          "promoted": row["promoted_at"] is not None and row["promoted_at"] < until,
                          "reverted": row["reverted_at"] is not None and row["reverted_at"] < until})
        if row["merged_at"] < until and (row["promoted_at"] is None or row["promoted_at"] >= until) \
                and (row["reverted_at"] is None or row["reverted_at"] >= until):
            review.append({"task_id": row["task_id"], "merged_at": row["merged_at"],
                           "merged_local": clock.datetime(row["merged_at"]), "waiting_s": until - row["merged_at"]})
    return {"today": today, "in_review": review}


def _lanes(attempts: list[dict]) -> tuple[dict[int, tuple[str, int]], set[str]]:
    """The chart row ``(node, slot)`` of every attempt.

    Attempts record their slot (since schema 3). For a node where some attempt has none
    (older rows), all of that node's attempts get lanes greedily instead: in start order,
    each takes the first lane free by its start; the chart labels those rows "lane", not
    "slot", because they are not the slot numbers the leases used.
    """
    lanes: dict[int, tuple[str, int]] = {}
    by_node: dict[str, list[dict]] = defaultdict(list)
    for row in attempts:
        by_node[row["node"] or "(no node)"].append(row)
    inferred = {n for n, rows in by_node.items() if any(r["slot"] is None for r in rows)}
    for node, rows in by_node.items():
        if node not in inferred:
            lanes.update({r["id"]: (node, int(r["slot"])) for r in rows})
            continue
        free_at: list[float] = []
        for row in sorted(rows, key=lambda r: (r["shown_start"], r["id"])):
            lane = next((i for i, end in enumerate(free_at) if end <= row["shown_start"]), len(free_at))
            if lane == len(free_at):
                free_at.append(row["shown_end"])
            else:
                free_at[lane] = row["shown_end"]
            lanes[row["id"]] = (node, lane)
    return lanes, inferred


def _capacity(store: Store, attempts: list[dict], lanes: dict[int, tuple[str, int]], day_start: float) -> list[dict]:
    """The nodes in service this day and their slots (see the module docstring)."""
    used: dict[str, int] = {}
    for node, slot in lanes.values():
        used[node] = max(used.get(node, 0), slot + 1)
    nodes = []
    for row in store.db.execute("SELECT name, slots, enabled, disabled_by, disabled_at FROM nodes ORDER BY name"):
        in_service = row["enabled"] and (row["disabled_by"] is None or (row["disabled_at"] or 0) >= day_start)
        if in_service or row["name"] in used:
            slots = max(int(row["slots"]), used.pop(row["name"], 0))
            if slots:
                nodes.append({"name": row["name"], "slots": slots})
    nodes += [{"name": n, "slots": s} for n, s in sorted(used.items())]  # attempts on nodes the table lost
    return nodes


def _axis(attempts: list[dict], day_start: float, until: float, bucket_s: int, clock: _Clock) -> dict[str, Any]:
    """The time axis shared by both charts: the active period, widened to whole buckets."""
    if not attempts:
        return {"active_start": None, "active_end": None, "start": None, "end": None, "ticks": []}
    active_start = min(a["shown_start"] for a in attempts)
    active_end = max(a["shown_end"] for a in attempts)
    start = day_start + math.floor((active_start - day_start) / bucket_s) * bucket_s
    end = day_start + max(math.ceil((active_end - day_start) / bucket_s) * bucket_s, start - day_start + bucket_s)
    end = min(end, max(until, start + bucket_s))
    span = end - start
    step = next((s for s in (300, 600, 900, 1800, 3600, 7200, 10800, 21600) if span / s <= 12), 43200)
    first = day_start + math.ceil((start - day_start) / step) * step
    ticks = [{"ts": t, "label": clock.hm(t)} for t in _frange(first, end, step)]
    return {"active_start": active_start, "active_end": active_end, "active_start_local": clock.hm(active_start),
            "active_end_local": clock.hm(active_end), "start": start, "end": end, "ticks": ticks}


def _frange(start: float, end: float, step: float) -> list[float]:
    count = int(math.floor((end - start) / step + 1e-9)) + 1 if end >= start else 0
    return [start + i * step for i in range(count)]


def _attempt_view(row: dict, lane: tuple[str, int], clock: _Clock) -> dict[str, Any]:
    return {"id": row["id"], "task_id": row["task_id"], "number": row["number"], "node": lane[0], "lane": lane[1],
            "slot": row["slot"], "started_at": row["started_at"], "ended_at": row["ended_at"],
            "shown_start": row["shown_start"], "shown_end": row["shown_end"],
            "start_local": clock.hm(row["started_at"]),
            "end_local": clock.hm(row["ended_at"]) if row["ended_at"] is not None else "running",
            "outcome": row["outcome"], "category": row["category"], "kind": row["kind"],
            "executor": row["executor_name"], "reason": _reason_key(row["reason"]) if row["reason"] else "",
            # Usage is known once the attempt is collected (its executor recorded); cost may still be unknown.
            "collected": row["executor"] is not None, "model": row.get("model"),
            "input_tokens": row.get("input_tokens"), "output_tokens": row.get("output_tokens"),
            "cost_usd": row.get("cost_usd")}


def _utilisation(attempts: list[dict], nodes: list[dict], axis: dict, bucket_s: int, clock: _Clock) -> dict[str, Any]:
    capacity = sum(n["slots"] for n in nodes)
    info: dict[str, Any] = {"bucket_s": bucket_s, "capacity_slots": capacity, "nodes": nodes,
                            "target": UTILISATION_TARGET, "buckets": [], "busy_slot_s": 0.0,
                            "active_s": 0.0, "average": None, "meets_target": None}
    if axis["start"] is None:
        return info
    busy = sum(a["shown_end"] - a["shown_start"] for a in attempts)
    active = axis["active_end"] - axis["active_start"]
    for left in _frange(axis["start"], axis["end"] - bucket_s, bucket_s):
        right = min(left + bucket_s, axis["end"])
        held = sum(max(0.0, min(a["shown_end"], right) - max(a["shown_start"], left)) for a in attempts)
        share = held / (capacity * (right - left)) if capacity and right > left else None
        info["buckets"].append({"start": left, "end": right, "label": clock.hm(left), "busy_slot_s": held,
                                "busy_slots": held / (right - left) if right > left else 0.0, "utilisation": share})
    info.update(busy_slot_s=busy, active_s=active)
    if capacity and active > 0:
        info["average"] = busy / (capacity * active)
        info["meets_target"] = info["average"] >= UTILISATION_TARGET
    return info


def _percentile(values: list[float], share: float) -> float | None:
    """Nearest-rank percentile: the smallest value with at least ``share`` of the values at or below it."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def _cycle(store: Store, project: str, merged: list[dict]) -> dict[str, Any]:
    firsts = {r["task_id"]: r["first"] for r in store.db.execute(
        "SELECT task_id, MIN(started_at) AS first FROM attempts WHERE project = ? GROUP BY task_id", (project,))}
    samples = [{"task_id": m["task_id"], "seconds": m["merged_at"] - firsts[m["task_id"]]}
               for m in merged if m["task_id"] in firsts and firsts[m["task_id"]] <= m["merged_at"]]
    values = [s["seconds"] for s in samples]
    return {"count": len(samples), "samples": samples, "median_s": statistics.median(values) if values else None,
            "p90_s": _percentile(values, 0.9),
            "definition": "first attempt's start to the merge on integration, for the merges of the day; "
                          "p90 by nearest rank"}


def _attempts_per_spec(started: list[dict]) -> dict[str, Any]:
    per_spec = Counter(a["task_id"] for a in started)
    kinds = Counter(a["kind"] or "spec" for a in started)
    return {"specs": len(per_spec), "attempts": len(started),
            "mean": (len(started) / len(per_spec)) if per_spec else None, "max": max(per_spec.values(), default=0),
            "histogram": {str(k): v for k, v in sorted(Counter(per_spec.values()).items())},
            "by_kind": dict(sorted(kinds.items())),
            "most": [{"task_id": t, "attempts": n} for t, n in sorted(per_spec.items(), key=lambda i: (-i[1], i[0]))
                     if n > 1][:10]}


def _reason_key(reason: str | None) -> str:
    """A failure reason's first line, whitespace collapsed, cut to REASON_WIDTH: what failures are grouped by."""
    first = next((line for line in (reason or "").splitlines() if line.strip()), "")
    text = " ".join(first.split()).rstrip(":").rstrip() or "(no reason recorded)"
    return text if len(text) <= REASON_WIDTH else text[:REASON_WIDTH - 1] + "…"


def _failures(store: Store, project: str, started: list[dict], timelines: dict, day_start: float,
              day_end: float) -> dict[str, Any]:
    items = []
    for row in started:
        if row["category"] in FAILURE_CATEGORIES:
            items.append({"stage": "node", "task_id": row["task_id"], "attempt": row["number"],
                          "category": row["category"], "executor": row["executor_name"],
                          "node": row["node"] or "(no node)", "reason": _reason_key(row["reason"])})
    producers = [dict(r) for r in store.db.execute(
        "SELECT a.task_id, a.number, a.node, a.ended_at, COALESCE(a.executor, s.executor) AS executor FROM attempts a"
        " LEFT JOIN specs s ON s.project = a.project AND s.task_id = a.task_id WHERE a.project = ? AND"
        " a.outcome = 'succeeded' ORDER BY a.ended_at", (project,))]
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
                              "node": (producer or {}).get("node") or "(no node)", "reason": _reason_key(reason)})
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


def _usage(store: Store, project: str, day_start: float, until: float) -> dict[str, Any]:
    """Tokens and cost of the collected attempts started in ``[day_start, until)``, per executor and node."""
    return {**spent.rollup(store.usage_rows(project, since=day_start, until=until), by=("executor", "node")),
            "source": spent.SOURCE,
            "definition": "collected attempts (an executor recorded) that started this day; a cost shown as "
                          "unknown was not reported and had no price, and is not counted as 0"}


def _status_rounds(row: dict) -> list | None:
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


def _rate_limits(started: list[dict]) -> dict[str, Any]:
    limited: Counter[str] = Counter()
    fallbacks: Counter[str] = Counter()
    read = hit = exhausted = 0
    for row in started:
        rounds = _status_rounds(row)
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


def _queue(timelines: dict, axis: dict, states: dict[str, str]) -> dict[str, Any]:
    """Time-weighted averages of the queued and the running specs over the active period."""
    info: dict[str, Any] = {"avg_queued": None, "avg_running": None,
                            "queued_at_end": sum(1 for s in states.values() if s == SpecState.QUEUED.value),
                            "running_at_end": sum(1 for s in states.values() if s == SpecState.RUNNING.value)}
    first, last = axis["active_start"], axis["active_end"]
    if first is None or last <= first:
        return info
    active = last - first
    totals = {SpecState.QUEUED.value: 0.0, SpecState.RUNNING.value: 0.0}
    for line in timelines.values():
        for index, (when, to_state, _reason) in enumerate(line):
            if to_state not in totals:
                continue
            ends = line[index + 1][0] if index + 1 < len(line) else math.inf
            totals[to_state] += max(0.0, min(ends, last) - max(when, first))
    info.update(avg_queued=totals["queued"] / active, avg_running=totals["running"] / active)
    return info


def _conflicts(timelines: dict, day_start: float, day_end: float, merged: int) -> dict[str, Any]:
    hits = [(t, when) for t, line in timelines.items() for when, state, _r in line
            if state == SpecState.CONFLICT.value and day_start <= when < day_end]
    tries = merged + len(hits)
    return {"count": len(hits), "specs": sorted({t for t, _w in hits}), "merge_tries": tries,
            "share": (len(hits) / tries) if tries else None}


def _signals(fig: dict) -> list[dict[str, Any]]:
    queue, success, conflicts, util = fig["queue"], fig["success"], fig["conflicts"], fig["utilisation"]
    signals = []
    if queue["avg_queued"] is None:
        signals.append({"key": "add_nodes", "triggered": None, "rule": "queued > 2 × running",
                        "measure": "no attempt ran this day", "advice": "not evaluated"})
    else:
        triggered = queue["avg_queued"] > QUEUE_FACTOR * queue["avg_running"]
        advice = "add nodes: specs waited for slots" if triggered else "no more nodes needed"
        if triggered and util["average"] is not None and util["average"] < UTILISATION_TARGET:
            advice = (f"add nodes only if specs waited for slots: the slots were {_pct(util['average'])} busy, below "
                      f"the {_pct(UTILISATION_TARGET)} target, so the queue also waited on dependencies or path locks")
        signals.append({"key": "add_nodes", "triggered": triggered, "rule": "queued > 2 × running",
                        "measure": f"On average {queue['avg_queued']:.2f} queued vs {queue['avg_running']:.2f} running "
                                   f"over the active period (threshold {QUEUE_FACTOR * queue['avg_running']:.2f})",
                        "advice": advice})
    if not success["decided"]:
        signals.append({"key": "spec_quality", "triggered": None, "rule": "spec-level failure rate > 30 %",
                        "measure": "no spec decided this day", "advice": "not evaluated"})
    else:
        rate = success["failed"] / success["decided"]
        triggered = rate > FAILURE_RATE_LIMIT
        signals.append({"key": "spec_quality", "triggered": triggered, "rule": "spec-level failure rate > 30 %",
                        "measure": f"{success['failed']} of {success['decided']} decided specs failed ({_pct(rate)})",
                        "value": rate,
                        "advice": "improve the specs (goals, acceptance criteria, modifies), not the fleet" if triggered
                        else "spec quality is fine"})
    share = conflicts["share"]
    triggered = conflicts["count"] >= CONFLICT_MIN and share is not None and share > CONFLICT_SHARE
    signals.append({"key": "work_split", "triggered": triggered,
                    "rule": f"merge conflicts ≥ {CONFLICT_MIN} and > {_pct(CONFLICT_SHARE)} of merge tries",
                    "measure": f"{_plural(conflicts['count'], 'conflict')} in {_plural(conflicts['merge_tries'], 'merge try')}"
                               + (f" ({_pct(share)})" if share is not None else ""),
                    "advice": "split the work differently: fewer specs touching the same files, narrower modifies"
                    if triggered else "conflicts are rare enough"})
    return signals


# -- formatting -------------------------------------------------------------------------------

def _plural(count: int, noun: str) -> str:
    if count == 1:
        return f"1 {noun}"
    return f"{count} {noun[:-1] + 'ies' if noun.endswith('y') else noun + 's'}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f} %"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, _ = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min"


def headline(fig: dict) -> dict[str, Any]:
    """The few numbers a playbook prints and returns."""
    success, util, cycle = fig["success"], fig["utilisation"], fig["cycle"]
    return {"day": fig["day"], "specs": fig["specs_total"], "attempted": success["attempted"],
            "succeeded": success["succeeded"], "decided": success["decided"], "success_rate": success["rate"],
            "merged": len(fig["merges"]["today"]), "in_review": len(fig["merges"]["in_review"]),
            "blocked": len(fig["blocked"]), "failed": len(fig["failed"]), "attempts": fig["attempts_per_spec"]["attempts"],
            "utilisation": util["average"], "cycle_median_s": cycle["median_s"], "cycle_p90_s": cycle["p90_s"],
            "input_tokens": fig["usage"]["total"]["input_tokens"], "output_tokens": fig["usage"]["total"]["output_tokens"],
            "cost_usd": fig["usage"]["total"]["cost_usd"], "cost_unknown": fig["usage"]["total"]["cost_unknown"],
            "signals": [s["key"] for s in fig["signals"] if s["triggered"]]}


def summary_line(fig: dict) -> str:
    success = fig["success"]
    rate = f"{_pct(success['rate'])} ({success['succeeded']} of {success['decided']})" if success["decided"] else "n/a"
    return (f"{fig['project']} {fig['day']}: success {rate}, {len(fig['merges']['today'])} merged, "
            f"{len(fig['merges']['in_review'])} in review, {len(fig['blocked'])} blocked, "
            f"utilisation {_pct(fig['utilisation']['average'])}, {_spent_short(fig['usage']['total'])}")


def _spent_short(total: dict) -> str:
    return (f"tokens {spent.tokens_text(total['input_tokens'])} in / {spent.tokens_text(total['output_tokens'])} out, "
            f"cost {spent.cost_text(total)}")


def _attempt_cost(view: dict) -> list[str]:
    """Tokens in, tokens out and cost of one attempt: "-" until it is collected, an unknown cost as "unknown"."""
    if not view["collected"]:
        return ["-", "-", "-"]
    cost = "unknown" if view["cost_usd"] is None else spent.dollars(float(view["cost_usd"]))
    return [spent.tokens_text(view["input_tokens"]), spent.tokens_text(view["output_tokens"]), cost]


def _usage_rows(usage: dict, key: str) -> list[list[Any]]:
    """``key``, attempts, tokens in, tokens out, cost: one row per executor (or node), then the day's total."""
    def cells(e: dict) -> list[Any]:
        return [e["attempts"], spent.tokens_text(e["input_tokens"]), spent.tokens_text(e["output_tokens"]),
                spent.cost_text(e)]
    rows = [[e[key] if e[key] is not None else "(no node)", *cells(e)] for e in usage[f"by_{key}"]]
    return rows + [["total", *cells(usage["total"])]] if rows else []


def _md(text: Any) -> str:
    """A table cell from untrusted text: one line, pipes escaped, no HTML a viewer would render."""
    value = " ".join(str(text).split())
    return _html.escape(value, quote=False).replace("|", "\\|")


def markdown(fig: dict) -> str:
    success, util, cycle = fig["success"], fig["utilisation"], fig["cycle"]
    out = [f"# Daily report: {_md(fig['project'])}, {fig['day']}", "",
           f"Times in {_md(fig['timezone'])}. Generated {fig['generated_local']}"
           + ("" if fig["complete"] else " (the day is not over: figures up to now)") + ".", ""]
    out += ["## Summary", "", "| figure | value |", "|---|---|"]
    rate = f"{_pct(success['rate'])} ({success['succeeded']} of {success['decided']})" if success["decided"] else \
        f"n/a (0 of 0; {success['attempted']} specs attempted, none decided)"
    out += [f"| success rate | {rate} |",
            f"| specs attempted | {success['attempted']} ({success['undecided']} not decided yet) |",
            f"| merged today | {len(fig['merges']['today'])} |",
            f"| in review | {len(fig['merges']['in_review'])} |",
            f"| blocked | {len(fig['blocked'])} |",
            f"| failed | {len(fig['failed'])} |",
            f"| attempts | {fig['attempts_per_spec']['attempts']} |",
            f"| slot utilisation | {_pct(util['average'])} (target {_pct(util['target'])}+) |",
            f"| cycle time median / p90 | {_duration(cycle['median_s'])} / {_duration(cycle['p90_s'])} |",
            f"| tokens in / out | {spent.tokens_text(fig['usage']['total']['input_tokens'])} / "
            f"{spent.tokens_text(fig['usage']['total']['output_tokens'])} |",
            f"| cost | {spent.cost_text(fig['usage']['total'])} |", ""]
    out += [f"Success rate: {success['definition']}.", ""]
    out += ["## Specs by state at the end of the day", "", "| state | specs |", "|---|---|"]
    out += [f"| {s} | {n} |" for s, n in fig["states"].items()] + [f"| total | {fig['specs_total']} |", ""]
    out += ["## Scaling signals", ""]
    for signal in fig["signals"]:
        mark = {True: "**TRIGGERED**", False: "not triggered", None: "not evaluated"}[signal["triggered"]]
        out.append(f"- {signal['rule']}: {mark}. {signal['measure']}. Advice: {signal['advice']}.")
    out += ["", "## Merged today", ""]
    out += _md_table(["spec", "merged", "promoted", "reverted"],
                     [[m["task_id"], m["merged_local"], "yes" if m["promoted"] else "no", "yes" if m["reverted"] else "no"]
                      for m in fig["merges"]["today"]])
    out += ["## In review (on integration, not promoted)", ""]
    out += _md_table(["spec", "merged", "waiting by then"], [[m["task_id"], m["merged_local"], _duration(m["waiting_s"])]
                                                    for m in fig["merges"]["in_review"]])
    out += ["## Blocked", ""]
    out += _md_table(["spec", "reason"], [[b["task_id"], b["reason"]] for b in fig["blocked"]])
    out += ["## Failed", ""]
    out += _md_table(["spec", "reason"], [[b["task_id"], b["reason"]] for b in fig["failed"]])
    axis = fig["gantt"]["axis"]
    out += ["## Slot utilisation", "",
            f"Average over the active period ({_duration(util['active_s'])}, "
            f"{axis.get('active_start_local', '-')}–{axis.get('active_end_local', '-')}): "
            f"**{_pct(util['average'])}** of {util['capacity_slots']} slots "
            f"({', '.join(_md(n['name']) + ' ' + str(n['slots']) for n in util['nodes']) or 'no node'}); "
            f"the seeds' target is {_pct(util['target'])}+.", ""]
    out += _md_table([f"{util['bucket_s'] // 60} min from", "busy slots", "utilisation"],
                     [[b["label"], f"{b['busy_slots']:.2f}", _pct(b["utilisation"])] for b in util["buckets"]])
    out += ["## Attempts (Gantt data)", ""]
    if fig["gantt"]["inferred_nodes"]:
        out += ["Lanes of " + ", ".join(_md(n) for n in fig["gantt"]["inferred_nodes"])
                + " are assigned greedily: those attempts did not record their slot.", ""]
    out += _md_table(["spec", "#", "node", "slot", "start", "end", "outcome", "executor", "tokens in", "tokens out",
                      "cost", "reason"],
                     [[a["task_id"], a["number"], a["node"], a["lane"], a["start_local"], a["end_local"], a["category"],
                       a["executor"], *_attempt_cost(a), a["reason"]] for a in fig["gantt"]["attempts"]])
    usage = fig["usage"]
    out += ["## Tokens and cost", "",
            f"Day total: {usage['total']['attempts']} collected attempts, "
            f"{spent.tokens_text(usage['total']['input_tokens'])} tokens in, "
            f"{spent.tokens_text(usage['total']['output_tokens'])} tokens out, cost {spent.cost_text(usage['total'])}. "
            f"Counted: {usage['definition']}. Source: {usage['source']}.", ""]
    for key in ("executor", "node"):
        out += [f"### By {key}", ""]
        out += _md_table([key, "attempts", "tokens in", "tokens out", "cost"], _usage_rows(usage, key))
    aps = fig["attempts_per_spec"]
    out += ["## Cycle time and attempts", "",
            f"Cycle time ({cycle['definition']}): median {_duration(cycle['median_s'])}, "
            f"p90 {_duration(cycle['p90_s'])}, over {cycle['count']} merges.", "",
            f"Attempts per spec: {aps['attempts']} attempts for {aps['specs']} specs, mean "
            + (f"{aps['mean']:.2f}" if aps["mean"] is not None else "n/a") + f", max {aps['max']}; "
            + "distribution " + (", ".join(f"{k} attempt(s): {v} specs" for k, v in aps["histogram"].items()) or "none")
            + "; by kind " + (", ".join(f"{k} {v}" for k, v in aps["by_kind"].items()) or "none") + ".", ""]
    failures = fig["failures"]
    out += ["## Failures", "", f"{failures['total']} failures: "
            + (", ".join(f"{k} {v}" for k, v in failures["by_stage"].items()) or "none") + " (stage).", ""]
    for key in ("executor", "node"):
        out += [f"### By {key}", ""]
        out += _md_table([key, "attempts", "failures (node + after)", "reasons"],
                         [[g[key], g["attempts"], f"{g['failures']} ({g['node_failures']} + {g['after_node']})",
                           "; ".join(f"{r['count']}× {r['reason']}" for r in g["reasons"]) or "-"]
                          for g in failures[f"by_{key}"]])
    limits = fig["rate_limits"]
    out += ["## Rate limits", "",
            f"{limits['attempts_rate_limited']} of {limits['attempts_read']} attempts with a readable status hit a rate "
            f"limit ({limits['attempts']} attempts started; source: {limits['source']}). "
            f"Rate-limited tries: {_counts(limits['tries_rate_limited'])}. Fallbacks: {_counts(limits['fallbacks'])}. "
            f"Rounds where every executor was rate limited: {limits['chain_exhausted']}.", ""]
    conflicts = fig["conflicts"]
    out += ["## Merge conflicts", "",
            f"{_plural(conflicts['count'], 'conflict')} in {_plural(conflicts['merge_tries'], 'merge try')}"
            + (f" ({_pct(conflicts['share'])})" if conflicts["share"] is not None else "")
            + (": " + ", ".join(_md(s) for s in conflicts["specs"]) if conflicts["specs"] else "") + ".", ""]
    return "\n".join(out).rstrip() + "\n"


def _counts(mapping: dict[str, int]) -> str:
    return ", ".join(f"{_md(k)} {v}" for k, v in mapping.items()) or "none"


def _md_table(header: list[str], rows: list[list[Any]]) -> list[str]:
    if not rows:
        return ["None.", ""]
    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows] + [""])


# -- HTML -----------------------------------------------------------------------------------

COLOURS = {"succeeded": "#2f9e44", "failed": "#e03131", "infra": "#f08c00", "lost": "#7048e8", "killed": "#868e96",
           "running": "#1c7ed6"}
CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:24px;color:#212529;
max-width:1360px}
h1{font-size:1.6em;margin:0 0 4px}h2{font-size:1.25em;margin:28px 0 8px;border-bottom:1px solid #dee2e6;
padding-bottom:4px}h3{font-size:1.05em;margin:16px 0 6px}
.muted{color:#6c757d}table{border-collapse:collapse;margin:6px 0 12px}
th,td{border:1px solid #dee2e6;padding:4px 8px;text-align:left;vertical-align:top;font-size:.92em}
th{background:#f1f3f5}td.num{text-align:right;font-variant-numeric:tabular-nums}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:12px 0}
.card{border:1px solid #dee2e6;border-radius:6px;padding:10px 14px;min-width:150px}
.card .value{font-size:1.5em;font-weight:600}.card .label{color:#6c757d;font-size:.85em}
.card .value .label{font-size:.55em;font-weight:400}
.signal{padding:6px 10px;border-radius:4px;margin:4px 0;border-left:4px solid #adb5bd;background:#f8f9fa}
.signal.on{border-color:#e03131;background:#fff5f5}.signal.off{border-color:#2f9e44}
svg text{font-family:inherit;font-size:11px;fill:#495057}
svg .grid{stroke:#e9ecef;stroke-width:1}svg .lane{fill:#f8f9fa}svg .lane.odd{fill:#ffffff}
svg .target{stroke:#e03131;stroke-dasharray:6 4;stroke-width:1.5}
svg .avg{stroke:#1c7ed6;stroke-dasharray:2 3;stroke-width:1.5}
svg .bar{stroke:#fff;stroke-width:1}svg .ubar{fill:#74c0fc}.legend span{display:inline-block;margin-right:14px;font-size:.9em}
.legend .swatch{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:-1px;border-radius:2px}
code{background:#f1f3f5;padding:1px 4px;border-radius:3px}
""" + "".join(f"svg .bar.{k}{{fill:{v}}}.legend .swatch.{k}{{background:{v}}}" for k, v in COLOURS.items())


def _e(value: Any) -> str:
    return _html.escape(str(value), quote=True)


def _figure(key: str, text: Any) -> str:
    """A number the page shows, tagged so tools (and the browser test) can find it."""
    return f'<span class="figure" data-key="{_e(key)}">{_e(text)}</span>'


def html(fig: dict) -> str:
    success, util, cycle = fig["success"], fig["utilisation"], fig["cycle"]
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>specfleet daily report: {_e(fig['project'])} {_e(fig['day'])}</title>",
             f"<style>{CSS}</style></head><body>",
             f"<h1>Daily report: {_e(fig['project'])}, {_e(fig['day'])}</h1>",
             f'<p class="muted">Times in {_e(fig["timezone"])}. Generated {_e(fig["generated_local"])}'
             + ("" if fig["complete"] else " (the day is not over: figures up to now)") + ".</p>"]
    rate = (f"{_figure('success.rate', _pct(success['rate']))}<div class=\"label\">"
            f"{_figure('success.succeeded', success['succeeded'])} of {_figure('success.decided', success['decided'])}"
            " decided specs</div>")
    cards = [("success rate", rate),
             ("merged today", _figure("merged", len(fig["merges"]["today"]))),
             ("in review", _figure("in_review", len(fig["merges"]["in_review"]))),
             ("blocked", _figure("blocked", len(fig["blocked"]))),
             ("attempts", _figure("attempts", fig["attempts_per_spec"]["attempts"])),
             ("slot utilisation", f"{_figure('utilisation', _pct(util['average']))}<div class=\"label\">target "
                                  f"{_e(_pct(util['target']))}+</div>"),
             ("cycle time median / p90", f"{_figure('cycle.median', _duration(cycle['median_s']))} / "
                                         f"{_figure('cycle.p90', _duration(cycle['p90_s']))}"),
             ("cost", f"{_figure('usage.cost', spent.cost_text(fig['usage']['total']))}<div class=\"label\">"
                      f"{_figure('usage.input_tokens', spent.tokens_text(fig['usage']['total']['input_tokens']))} in / "
                      f"{_figure('usage.output_tokens', spent.tokens_text(fig['usage']['total']['output_tokens']))} "
                      "out tokens</div>")]
    parts.append('<section id="summary"><div class="cards">' + "".join(
        f'<div class="card"><div class="label">{_e(label)}</div><div class="value">{value}</div></div>'
        for label, value in cards) + "</div>")
    parts.append(f'<p class="muted">Success rate: {_e(success["definition"])}. Attempted this day: '
                 f'{_figure("success.attempted", success["attempted"])} specs, '
                 f'{_figure("success.undecided", success["undecided"])} not decided yet'
                 + (" (" + _e(", ".join(f"{k} {v}" for k, v in success["undecided_states"].items())) + ")"
                    if success["undecided_states"] else "") + ".</p></section>")

    parts.append('<section id="signals"><h2>Scaling signals</h2>')
    for signal in fig["signals"]:
        state = {True: "on", False: "off", None: "na"}[signal["triggered"]]
        word = {True: "TRIGGERED", False: "not triggered", None: "not evaluated"}[signal["triggered"]]
        parts.append(f'<div class="signal {state}" data-signal="{_e(signal["key"])}" data-triggered="{state}">'
                     f"<strong>{_e(signal['rule'])}</strong>: {_e(word)}. {_e(signal['measure'])}. "
                     f"<em>{_e(signal['advice'])}</em>.</div>")
    parts.append("</section>")

    parts.append('<section id="gantt"><h2>Attempts per node and slot</h2>')
    parts.append('<div class="legend">' + "".join(f'<span><span class="swatch {k}"></span>{_e(k)}</span>' for k in CATEGORY_ORDER)
                 + "</div>")
    if fig["gantt"]["inferred_nodes"]:
        parts.append('<p class="muted">Lanes of ' + _e(", ".join(fig["gantt"]["inferred_nodes"]))
                     + " are assigned greedily (first free lane): those attempts did not record their slot.</p>")
    parts.append(_gantt_svg(fig) + "</section>")

    parts.append('<section id="utilisation"><h2>Slot utilisation</h2>')
    nodes = ", ".join(f"{n['name']} {n['slots']}" for n in util["nodes"]) or "no node"
    parts.append(f"<p>Average over the active period "
                 f"({_e(fig['gantt']['axis'].get('active_start_local', '-'))}–"
                 f"{_e(fig['gantt']['axis'].get('active_end_local', '-'))}, {_e(_duration(util['active_s']))}): "
                 f"<strong>{_figure('utilisation.average', _pct(util['average']))}</strong> of "
                 f"{_figure('capacity', util['capacity_slots'])} slots ({_e(nodes)}). "
                 f"The seeds' target is {_e(_pct(util['target']))}+"
                 + ("" if util["meets_target"] is None else (": met." if util["meets_target"] else ": not met."))
                 + f" Buckets of {util['bucket_s'] // 60} min.</p>")
    parts.append(_utilisation_svg(fig) + "</section>")

    parts.append('<section id="states"><h2>Specs by state at the end of the day</h2>')
    parts.append(_table(["state", "specs"], [[s, _figure(f"state.{s}", n)] for s, n in fig["states"].items()]
                        + [["total", _figure("specs_total", fig["specs_total"])]], raw=True) + "</section>")

    parts.append('<section id="merges"><h2>Merged today</h2>')
    parts.append(_table(["spec", "merged", "promoted", "reverted"],
                        [[m["task_id"], m["merged_local"], "yes" if m["promoted"] else "no",
                          "yes" if m["reverted"] else "no"] for m in fig["merges"]["today"]]))
    parts.append("<h2>In review (on integration, not promoted)</h2>")
    parts.append(_table(["spec", "merged", "waiting by then"], [[m["task_id"], m["merged_local"], _duration(m["waiting_s"])]
                                                       for m in fig["merges"]["in_review"]]) + "</section>")
    parts.append('<section id="blocked"><h2>Blocked</h2>'
                 + _table(["spec", "reason"], [[b["task_id"], b["reason"]] for b in fig["blocked"]])
                 + "<h2>Failed</h2>" + _table(["spec", "reason"], [[b["task_id"], b["reason"]] for b in fig["failed"]])
                 + "</section>")

    aps = fig["attempts_per_spec"]
    mean = f"{aps['mean']:.2f}" if aps["mean"] is not None else "n/a"
    parts.append('<section id="cycle"><h2>Cycle time and attempts</h2>'
                 f"<p>Cycle time ({_e(cycle['definition'])}): median "
                 f"{_figure('cycle.median_s', _duration(cycle['median_s']))}, p90 "
                 f"{_figure('cycle.p90_s', _duration(cycle['p90_s']))}, over {_figure('cycle.count', cycle['count'])} "
                 "merges.</p>"
                 + _table(["spec", "cycle time"], [[s["task_id"], _duration(s["seconds"])] for s in cycle["samples"]])
                 + f"<p>Attempts per spec: {_figure('aps.attempts', aps['attempts'])} attempts for "
                 f"{_figure('aps.specs', aps['specs'])} specs, mean "
                 f"{_figure('aps.mean', mean)}, max {_figure('aps.max', aps['max'])}.</p>"
                 + _table(["attempts", "specs"], [[k, v] for k, v in aps["histogram"].items()]) + "</section>")

    failures = fig["failures"]
    parts.append('<section id="failures"><h2>Failures</h2>'
                 f"<p>{_figure('failures.total', failures['total'])} failures; by stage: "
                 f"{_e(', '.join(f'{k} {v}' for k, v in failures['by_stage'].items()) or 'none')}. Node attempts that "
                 "ended failed, infra or lost, and spec failures found after the node (verify, merge, review), charged "
                 "to the executor and node of the attempt that produced the branch.</p>")
    for key in ("executor", "node"):
        parts.append(f"<h3>By {key}</h3>" + _table(
            [key, "attempts", "failures", "node", "after node", "reasons"],
            [[g[key], g["attempts"], g["failures"], g["node_failures"], g["after_node"],
              "; ".join(f"{r['count']}× {r['reason']}" for r in g["reasons"]) or "-"]
             for g in failures[f"by_{key}"]], key=f"failures.{key}"))
    parts.append("</section>")

    limits = fig["rate_limits"]
    parts.append('<section id="rate-limits"><h2>Rate limits</h2>'
                 f"<p>{_figure('rate.attempts', limits['attempts_rate_limited'])} of "
                 f"{_figure('rate.read', limits['attempts_read'])} attempts with a readable status hit a rate limit "
                 f"({limits['attempts']} attempts started; source: {_e(limits['source'])}). Rounds where every executor "
                 f"was rate limited: {_figure('rate.exhausted', limits['chain_exhausted'])}.</p>"
                 + _table(["executor", "rate-limited tries"], [[k, v] for k, v in limits["tries_rate_limited"].items()])
                 + _table(["fallback", "times"], [[k, v] for k, v in limits["fallbacks"].items()]) + "</section>")
    usage = fig["usage"]
    parts.append('<section id="usage"><h2>Tokens and cost</h2>'
                 f"<p>Day total: {_figure('usage.attempts', usage['total']['attempts'])} collected attempts, "
                 f"{_figure('usage.total.input_tokens', spent.tokens_text(usage['total']['input_tokens']))} tokens in, "
                 f"{_figure('usage.total.output_tokens', spent.tokens_text(usage['total']['output_tokens']))} tokens out, "
                 f"cost {_figure('usage.total.cost', spent.cost_text(usage['total']))}.</p>"
                 f'<p class="muted">Counted: {_e(usage["definition"])}. Source: {_e(usage["source"])}.</p>')
    for key in ("executor", "node"):
        parts.append(f"<h3>By {key}</h3>" + _table([key, "attempts", "tokens in", "tokens out", "cost"],
                                                   _usage_rows(usage, key), key=f"usage.{key}"))
    parts.append("</section>")
    conflicts = fig["conflicts"]
    parts.append('<section id="conflicts"><h2>Merge conflicts</h2>'
                 f"<p>{_figure('conflicts', conflicts['count'])} conflicts in "
                 f"{_figure('merge_tries', conflicts['merge_tries'])} merge tries"
                 + (f" ({_e(_pct(conflicts['share']))})" if conflicts["share"] is not None else "")
                 + (": " + _e(", ".join(conflicts["specs"])) if conflicts["specs"] else "") + ".</p></section>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _table(header: list[str], rows: list[list[Any]], raw: bool = False, key: str | None = None) -> str:
    if not rows:
        return '<p class="muted">None.</p>'
    cell = (lambda v: str(v)) if raw else _e
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f'<td{" class=num" if isinstance(v, (int, float)) else ""}>{cell(v)}</td>'
                                    for v in row) + "</tr>" for row in rows)
    attribute = f' data-table="{_e(key)}"' if key else ""
    return f"<table{attribute}><tr>{head}</tr>{body}</table>"


GANTT_LEFT, GANTT_WIDTH, ROW, TOP = 150, 1150, 22, 28


def _x(ts: float, axis: dict) -> float:
    return GANTT_LEFT + (ts - axis["start"]) / (axis["end"] - axis["start"]) * GANTT_WIDTH


def _gantt_svg(fig: dict) -> str:
    gantt, axis = fig["gantt"], fig["gantt"]["axis"]
    if axis["start"] is None:
        return '<p class="muted">No attempt ran this day.</p>'
    lanes = {(lane["node"], lane["slot"]): index for index, lane in enumerate(gantt["lanes"])}
    height = TOP + ROW * len(lanes) + 8
    out = [f'<svg class="gantt" role="img" aria-label="attempts per node and slot" width="{GANTT_LEFT + GANTT_WIDTH + 20}"'
           f' height="{height}" viewBox="0 0 {GANTT_LEFT + GANTT_WIDTH + 20} {height}">']
    for lane, index in lanes.items():
        y = TOP + index * ROW
        out.append(f'<rect class="lane{" odd" if index % 2 else ""}" x="{GANTT_LEFT}" y="{y}" width="{GANTT_WIDTH}"'
                   f' height="{ROW}"/>')
        label = next(x["label"] for x in gantt["lanes"] if (x["node"], x["slot"]) == lane)
        out.append(f'<text x="{GANTT_LEFT - 6}" y="{y + ROW / 2 + 4:.1f}" text-anchor="end">{_e(label)}</text>')
    for tick in axis["ticks"]:
        x = _x(tick["ts"], axis)
        out.append(f'<line class="grid" x1="{x:.1f}" y1="{TOP - 4}" x2="{x:.1f}" y2="{height - 8}"/>')
        out.append(f'<text x="{x:.1f}" y="{TOP - 8}" text-anchor="middle">{_e(tick["label"])}</text>')
    for attempt in gantt["attempts"]:
        x1, x2 = _x(attempt["shown_start"], axis), _x(attempt["shown_end"], axis)
        y = TOP + lanes[(attempt["node"], attempt["lane"])] * ROW + 3
        tip = (f"{attempt['task_id']} attempt {attempt['number']} on {attempt['node']}: {attempt['start_local']}–"
               f"{attempt['end_local']}, {attempt['category']}, {attempt['executor']}"
               + (f" ({attempt['reason']})" if attempt["reason"] else "")
               + ("; tokens {} in / {} out, cost {}".format(*_attempt_cost(attempt)) if attempt["collected"] else ""))
        out.append(f'<rect class="bar {_e(attempt["category"])}" data-task="{_e(attempt["task_id"])}"'
                   f' data-attempt="{attempt["number"]}" x="{x1:.1f}" y="{y}" width="{max(2.0, x2 - x1):.1f}"'
                   f' height="{ROW - 6}" rx="2"><title>{_e(tip)}</title></rect>')
        if x2 - x1 > 40:
            out.append(f'<text x="{x1 + 4:.1f}" y="{y + ROW / 2 + 1:.1f}" style="fill:#fff">'
                       f'{_e(attempt["task_id"])}#{attempt["number"]}</text>')
    out.append("</svg>")
    return "".join(out)


def _utilisation_svg(fig: dict) -> str:
    util, axis = fig["utilisation"], fig["gantt"]["axis"]
    if axis["start"] is None or not util["buckets"]:
        return '<p class="muted">No attempt ran this day.</p>'
    plot = 180
    top = 16
    values = [b["utilisation"] or 0.0 for b in util["buckets"]]
    ceiling = max(1.0, max(values))
    height = top + plot + 24

    def y(share: float) -> float:
        return top + plot - share / ceiling * plot

    out = [f'<svg class="utilisation" role="img" aria-label="slot utilisation" width="{GANTT_LEFT + GANTT_WIDTH + 20}"'
           f' height="{height}" viewBox="0 0 {GANTT_LEFT + GANTT_WIDTH + 20} {height}">']
    for share in (0.0, 0.25, 0.5, 0.75, 1.0):
        out.append(f'<line class="grid" x1="{GANTT_LEFT}" y1="{y(share):.1f}" x2="{GANTT_LEFT + GANTT_WIDTH}"'
                   f' y2="{y(share):.1f}"/><text x="{GANTT_LEFT - 6}" y="{y(share) + 4:.1f}" text-anchor="end">'
                   f"{share * 100:.0f} %</text>")
    for bucket, share in zip(util["buckets"], values, strict=True):
        x1, x2 = _x(bucket["start"], axis), _x(bucket["end"], axis)
        out.append(f'<rect class="ubar" x="{x1 + 1:.1f}" y="{y(share):.1f}" width="{max(1.0, x2 - x1 - 2):.1f}"'
                   f' height="{top + plot - y(share):.1f}"><title>{_e(bucket["label"])}: {_e(_pct(bucket["utilisation"]))}'
                   f" ({bucket['busy_slots']:.2f} of {util['capacity_slots']} slots busy)</title></rect>")
    for tick in axis["ticks"]:
        out.append(f'<text x="{_x(tick["ts"], axis):.1f}" y="{top + plot + 16}" text-anchor="middle">'
                   f'{_e(tick["label"])}</text>')
    right = GANTT_LEFT + GANTT_WIDTH
    out.append(f'<line class="target" x1="{GANTT_LEFT}" y1="{y(util["target"]):.1f}" x2="{right}"'
               f' y2="{y(util["target"]):.1f}"/><text x="{right - 4}" y="{y(util["target"]) - 4:.1f}" text-anchor="end">'
               f"target {_e(_pct(util['target']))}</text>")
    if util["average"] is not None:
        out.append(f'<line class="avg" x1="{GANTT_LEFT}" y1="{y(util["average"]):.1f}" x2="{right}"'
                   f' y2="{y(util["average"]):.1f}"/><text x="{GANTT_LEFT + 4}" y="{y(util["average"]) - 4:.1f}">'
                   f"average {_e(_pct(util['average']))}</text>")
    out.append("</svg>")
    return "".join(out)


def write_report(db: str | Path, project: str, day: str | None = None, report_dir: str | Path | None = None,
                 dry_run: bool = False) -> dict[str, Any]:
    """Compute the day's figures and write ``<day>.md`` and ``<day>.html`` (each replaced in one step).

    Used by the action plugin (``playbooks/report.yml``) and ``specfleet report``. Returns the
    day, both paths, the headline figures and the lines to show.
    """
    from specfleet.model.settings import specfleet_home
    from specfleet.node.runner import write_atomic

    if not project or project in (".", "..") or Path(project).name != project:
        raise ReportError(f"project {project!r} is not a project name")
    day, start, end = day_bounds(day)
    if not Path(db).is_file():
        raise ReportError(f"{db}: no state database here: dispatch or feed a project first")
    with Store(db) as store:
        fig = figures(store, project, start, end, day=day)
    folder = Path(report_dir or specfleet_home() / "reports" / project)
    paths = {"markdown": folder / f"{day}.md", "html": folder / f"{day}.html"}
    if not dry_run:
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(str(paths["markdown"]), markdown(fig), 0o644)
        write_atomic(str(paths["html"]), html(fig), 0o644)
    signals = [f"{s['rule']}: {s['measure']}; {s['advice']}" for s in fig["signals"] if s["triggered"]]
    return {"day": day, "markdown": str(paths["markdown"]), "html": str(paths["html"]), "headline": headline(fig),
            "lines": [summary_line(fig), *signals, f"report: {paths['html']}"]}
