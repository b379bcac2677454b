# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The scaling signals: the seeds' three rules (add nodes, better specs, split the work) read from the day's figures."""
from __future__ import annotations

from typing import Any

from specfleet.report.slots import UTILISATION_TARGET
from specfleet.report.text import pct, plural

QUEUE_FACTOR = 2.0                  # queued > 2 x running -> add nodes
FAILURE_RATE_LIMIT = 0.30           # spec-level failure rate > 30 % -> better specs, not nodes
CONFLICT_MIN = 3                    # at least 3 conflicts ...
CONFLICT_SHARE = 0.15               # ... and more than 15 % of the day's merge tries -> split work differently


def scaling_signals(fig: dict) -> list[dict[str, Any]]:
    queue, success, conflicts, util = fig["queue"], fig["success"], fig["conflicts"], fig["utilisation"]
    signals = []
    if queue["avg_queued"] is None:
        signals.append({"key": "add_nodes", "triggered": None, "rule": "queued > 2 × running",
                        "measure": "no attempt ran this day", "advice": "not evaluated"})
    else:
        triggered = queue["avg_queued"] > QUEUE_FACTOR * queue["avg_running"]
        advice = "add nodes: specs waited for slots" if triggered else "no more nodes needed"
        if triggered and util["average"] is not None and util["average"] < UTILISATION_TARGET:
            advice = (f"add nodes only if specs waited for slots: the slots were {pct(util['average'])} busy, below "
                      f"the {pct(UTILISATION_TARGET)} target, so the queue also waited on dependencies or path locks")
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
                        "measure": f"{success['failed']} of {success['decided']} decided specs failed ({pct(rate)})",
                        "value": rate,
                        "advice": "improve the specs (goals, acceptance criteria, modifies), not the fleet" if triggered
                        else "spec quality is fine"})
    share = conflicts["share"]
    triggered = conflicts["count"] >= CONFLICT_MIN and share is not None and share > CONFLICT_SHARE
    signals.append({"key": "work_split", "triggered": triggered,
                    "rule": f"merge conflicts ≥ {CONFLICT_MIN} and > {pct(CONFLICT_SHARE)} of merge tries",
                    "measure": f"{plural(conflicts['count'], 'conflict')} in {plural(conflicts['merge_tries'], 'merge try')}"
                               + (f" ({pct(share)})" if share is not None else ""),
                    "advice": "split the work differently: fewer specs touching the same files, narrower modifies"
                    if triggered else "conflicts are rare enough"})
    return signals
