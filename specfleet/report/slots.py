# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The slots' figures: which chart row each attempt takes, the nodes in service, the time axis, utilisation."""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from specfleet.report.day import Clock
from specfleet.report.failures import reason_key
from specfleet.store.core import Store

UTILISATION_TARGET = 0.80          # the seeds: keep slots 80 %+ busy
BUCKET_S = 600                      # utilisation buckets: 10 minutes


def chart_lanes(attempts: list[dict]) -> tuple[dict[int, tuple[str, int]], set[str]]:
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


def nodes_in_service(store: Store, attempts: list[dict], lanes: dict[int, tuple[str, int]], day_start: float) -> list[dict]:
    """The nodes in service this day and their slots (see :mod:`specfleet.report.figures`)."""
    used: dict[str, int] = {}
    for node, slot in lanes.values():
        used[node] = max(used.get(node, 0), slot + 1)
    nodes = []
    for row in store.nodes_in_inventory():
        in_service = row["enabled"] and (row["disabled_by"] is None or (row["disabled_at"] or 0) >= day_start)
        if in_service or row["name"] in used:
            slots = max(int(row["slots"]), used.pop(row["name"], 0))
            if slots:
                nodes.append({"name": row["name"], "slots": slots})
    nodes += [{"name": n, "slots": s} for n, s in sorted(used.items())]  # attempts on nodes the table lost
    return nodes


def time_axis(attempts: list[dict], day_start: float, until: float, bucket_s: int, clock: Clock) -> dict[str, Any]:
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
    ticks = [{"ts": t, "label": clock.hm(t)} for t in frange(first, end, step)]
    return {"active_start": active_start, "active_end": active_end, "active_start_local": clock.hm(active_start),
            "active_end_local": clock.hm(active_end), "start": start, "end": end, "ticks": ticks}


def frange(start: float, end: float, step: float) -> list[float]:
    count = int(math.floor((end - start) / step + 1e-9)) + 1 if end >= start else 0
    return [start + i * step for i in range(count)]


def attempt_view(row: dict, lane: tuple[str, int], clock: Clock) -> dict[str, Any]:
    return {"id": row["id"], "task_id": row["task_id"], "number": row["number"], "node": lane[0], "lane": lane[1],
            "slot": row["slot"], "started_at": row["started_at"], "ended_at": row["ended_at"],
            "shown_start": row["shown_start"], "shown_end": row["shown_end"],
            "start_local": clock.hm(row["started_at"]),
            "end_local": clock.hm(row["ended_at"]) if row["ended_at"] is not None else "running",
            "outcome": row["outcome"], "category": row["category"], "kind": row["kind"],
            "executor": row["executor_name"], "reason": reason_key(row["reason"]) if row["reason"] else "",
            # Usage is known once the attempt is collected (its executor recorded); cost may still be unknown.
            "collected": row["executor"] is not None, "model": row.get("model"),
            "input_tokens": row.get("input_tokens"), "output_tokens": row.get("output_tokens"),
            "cost_usd": row.get("cost_usd")}


def utilisation_figures(attempts: list[dict], nodes: list[dict], axis: dict, bucket_s: int, clock: Clock) -> dict[str, Any]:
    capacity = sum(n["slots"] for n in nodes)
    info: dict[str, Any] = {"bucket_s": bucket_s, "capacity_slots": capacity, "nodes": nodes,
                            "target": UTILISATION_TARGET, "buckets": [], "busy_slot_s": 0.0,
                            "active_s": 0.0, "average": None, "meets_target": None}
    if axis["start"] is None:
        return info
    busy = sum(a["shown_end"] - a["shown_start"] for a in attempts)
    active = axis["active_end"] - axis["active_start"]
    for left in frange(axis["start"], axis["end"] - bucket_s, bucket_s):
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
