# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The daily report's figures: what a project's fleet did on one day, from the state store alone.

:func:`figures` reads the store (events, attempts, specs, merges, nodes) and returns one
JSON-serialisable dict; :mod:`specfleet.report.markdown` and :mod:`specfleet.report.html` render
it and do no arithmetic on the store of their own, so the two files always say the same.

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

import json
import math
import statistics
import time
from collections import Counter, defaultdict
from datetime import tzinfo
from typing import Any

from specfleet.model.ending import Outcome
from specfleet.model.states import DEPENDENCY_COMPLETED, STATE_ORDER, SpecState
from specfleet.report import usage as spent
from specfleet.report.day import Clock, ReportError
from specfleet.report.failures import failure_figures, rate_limit_figures
from specfleet.report.signals import scaling_signals
from specfleet.report.slots import BUCKET_S, attempt_view, chart_lanes, nodes_in_service, time_axis, utilisation_figures
from specfleet.store.core import Store

OUTCOMES = frozenset(o.value for o in Outcome)
DONE_STATES = frozenset(s.value for s in DEPENDENCY_COMPLETED)

Timeline = list[tuple[float, str, str | None]]


def figures(store: Store, project: str, day_start: float, day_end: float, *, now: float | None = None,
            tz: tzinfo | None = None, day: str | None = None, bucket_s: int = BUCKET_S) -> dict[str, Any]:
    """Every number of the report for ``project`` in ``[day_start, day_end)`` (epoch seconds).

    ``now`` (default: the clock) ends a day that is not over and the bars of running
    attempts; ``tz`` (default: local time) is how times are printed.
    """
    stamp = time.time() if now is None else float(now)
    if day_end <= day_start:
        raise ReportError("the day ends before it starts")
    if not store.has_project(project):
        raise ReportError(f"no project {project!r} in the state store: feed or dispatch it first")
    until = min(day_end, stamp)  # the end of what the report can know about
    clock = Clock(tz)
    day = day or clock.date(day_start)

    timelines = _timelines(store, project)
    states = {t: s for t, s in ((t, _state_at(line, until)) for t, line in timelines.items()) if s is not None}
    attempts = _attempts(store, project, day_start, until, stamp)
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

    lanes, inferred = chart_lanes(attempts)
    nodes = nodes_in_service(store, attempts, lanes, day_start)
    axis = time_axis(attempts, day_start, until, bucket_s, clock)
    result["gantt"] = {
        "lanes": [{"node": n, "slot": s, "label": f"{n} · slot {s}" if n not in inferred else f"{n} · lane {s}"}
                  for n, s in sorted({(n, s) for n, s in lanes.values()} | {(n["name"], i) for n in nodes
                                                                           for i in range(n["slots"])})],
        "inferred_nodes": sorted(inferred),
        "attempts": [attempt_view(a, lanes[a["id"]], clock) for a in attempts],
        "axis": axis,
    }
    result["utilisation"] = utilisation_figures(attempts, nodes, axis, bucket_s, clock)
    result["cycle"] = _cycle(store, project, result["merges"]["today"])
    result["attempts_per_spec"] = _attempts_per_spec(started_today)
    result["failures"] = failure_figures(store, project, started_today, timelines, day_start, day_end)
    result["rate_limits"] = rate_limit_figures(started_today)
    result["usage"] = _usage(store, project, day_start, until)
    result["queue"] = _queue(timelines, axis, states)
    result["conflicts"] = _conflicts(timelines, day_start, day_end, len(result["merges"]["today"]))
    result["signals"] = scaling_signals(result)
    return result


def _attempts(store: Store, project: str, day_start: float, until: float, stamp: float) -> list[dict]:
    """The attempts that ran during ``[day_start, until)``, each with its category and the part shown on the chart."""
    spec_executor = store.spec_executors(project)
    attempts = store.attempts_during(project, day_start, until)
    for row in attempts:
        row["executor_name"] = row["executor"] or spec_executor.get(row["task_id"]) or "(not recorded)"
        # An attempt that ended after the reported period was still running at its end.
        ended = row["ended_at"] is not None and row["ended_at"] <= until
        # NULL outcome with no end: running; an outcome this version does not know: lost.
        row["category"] = (Outcome(row["outcome"]).category if row["outcome"] in OUTCOMES else "lost") if ended else "running"
        row["shown_start"] = max(row["started_at"], day_start)
        row["shown_end"] = min(row["ended_at"] if row["ended_at"] is not None else stamp, until)
    return attempts


def _timelines(store: Store, project: str) -> dict[str, Timeline]:
    """Every spec's state changes ``(ts, state, reason)`` in order, from the events."""
    lines: dict[str, Timeline] = defaultdict(list)
    for row in store.state_changes(project):
        try:
            reason = json.loads(row["detail_json"]).get("reason")
        except (ValueError, AttributeError):
            reason = None
        lines[row["task_id"]].append((row["ts"], row["to_state"], reason if isinstance(reason, str) else None))
    return lines


def _state_at(line: Timeline, ts: float) -> str | None:
    state = None
    for when, to_state, _reason in line:
        if when > ts:
            break
        state = to_state
    return state


def _last_reason(line: Timeline, ts: float) -> str | None:
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


def _merges(store: Store, project: str, day_start: float, day_end: float, until: float, clock: Clock) -> dict:
    today, review = [], []
    for row in store.merges_of(project):
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


def _percentile(values: list[float], share: float) -> float | None:
    """Nearest-rank percentile: the smallest value with at least ``share`` of the values at or below it."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def _cycle(store: Store, project: str, merged: list[dict]) -> dict[str, Any]:
    firsts = store.first_attempt_starts(project)
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


def _usage(store: Store, project: str, day_start: float, until: float) -> dict[str, Any]:
    """Tokens and cost of the collected attempts started in ``[day_start, until)``, per executor and node."""
    return {**spent.rollup(store.usage_rows(project, since=day_start, until=until), by=("executor", "node")),
            "source": spent.SOURCE,
            "definition": "collected attempts (an executor recorded) that started this day; a cost shown as "
                          "unknown was not reported and had no price, and is not counted as 0"}


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
