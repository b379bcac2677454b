# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The daily report as Markdown: the figures of :func:`specfleet.report.figures.figures`, one section each.

Every section is a list of lines; nothing here reads the store or computes a figure.
"""
from __future__ import annotations

import html as _html
from typing import Any

from specfleet.model.durations import format_duration_words as duration
from specfleet.report import usage as spent
from specfleet.report.text import attempt_cost, pct, plural, usage_rows


def _md(text: Any) -> str:
    """A table cell from untrusted text: one line, pipes escaped, no HTML a viewer would render."""
    value = " ".join(str(text).split())
    return _html.escape(value, quote=False).replace("|", "\\|")


def markdown(fig: dict) -> str:
    out = [f"# Daily report: {_md(fig['project'])}, {fig['day']}", "",
           f"Times in {_md(fig['timezone'])}. Generated {fig['generated_local']}"
           + ("" if fig["complete"] else " (the day is not over: figures up to now)") + ".", ""]
    for section in (_summary, _states, _signals, _merges, _utilisation, _attempts, _usage, _cycle, _failures,
                    _rate_limits, _conflicts):
        out += section(fig)
    return "\n".join(out).rstrip() + "\n"


def _summary(fig: dict) -> list[str]:
    success, util, cycle = fig["success"], fig["utilisation"], fig["cycle"]
    out = ["## Summary", "", "| figure | value |", "|---|---|"]
    rate = f"{pct(success['rate'])} ({success['succeeded']} of {success['decided']})" if success["decided"] else \
        f"n/a (0 of 0; {success['attempted']} specs attempted, none decided)"
    out += [f"| success rate | {rate} |",
            f"| specs attempted | {success['attempted']} ({success['undecided']} not decided yet) |",
            f"| merged today | {len(fig['merges']['today'])} |",
            f"| in review | {len(fig['merges']['in_review'])} |",
            f"| blocked | {len(fig['blocked'])} |",
            f"| failed | {len(fig['failed'])} |",
            f"| attempts | {fig['attempts_per_spec']['attempts']} |",
            f"| slot utilisation | {pct(util['average'])} (target {pct(util['target'])}+) |",
            f"| cycle time median / p90 | {duration(cycle['median_s'])} / {duration(cycle['p90_s'])} |",
            f"| tokens in / out | {spent.tokens_text(fig['usage']['total']['input_tokens'])} / "
            f"{spent.tokens_text(fig['usage']['total']['output_tokens'])} |",
            f"| cost | {spent.cost_text(fig['usage']['total'])} |", ""]
    return out + [f"Success rate: {success['definition']}.", ""]


def _states(fig: dict) -> list[str]:
    out = ["## Specs by state at the end of the day", "", "| state | specs |", "|---|---|"]
    return out + [f"| {s} | {n} |" for s, n in fig["states"].items()] + [f"| total | {fig['specs_total']} |", ""]


def _signals(fig: dict) -> list[str]:
    out = ["## Scaling signals", ""]
    for signal in fig["signals"]:
        mark = {True: "**TRIGGERED**", False: "not triggered", None: "not evaluated"}[signal["triggered"]]
        out.append(f"- {signal['rule']}: {mark}. {signal['measure']}. Advice: {signal['advice']}.")
    return out


def _merges(fig: dict) -> list[str]:
    out = ["", "## Merged today", ""]
    out += _md_table(["spec", "merged", "promoted", "reverted"],
                     [[m["task_id"], m["merged_local"], "yes" if m["promoted"] else "no", "yes" if m["reverted"] else "no"]
                      for m in fig["merges"]["today"]])
    out += ["## In review (on integration, not promoted)", ""]
    out += _md_table(["spec", "merged", "waiting by then"], [[m["task_id"], m["merged_local"], duration(m["waiting_s"])]
                                                    for m in fig["merges"]["in_review"]])
    out += ["## Blocked", ""]
    out += _md_table(["spec", "reason"], [[b["task_id"], b["reason"]] for b in fig["blocked"]])
    out += ["## Failed", ""]
    return out + _md_table(["spec", "reason"], [[b["task_id"], b["reason"]] for b in fig["failed"]])


def _utilisation(fig: dict) -> list[str]:
    util, axis = fig["utilisation"], fig["gantt"]["axis"]
    out = ["## Slot utilisation", "",
           f"Average over the active period ({duration(util['active_s'])}, "
           f"{axis.get('active_start_local', '-')}–{axis.get('active_end_local', '-')}): "
           f"**{pct(util['average'])}** of {util['capacity_slots']} slots "
           f"({', '.join(_md(n['name']) + ' ' + str(n['slots']) for n in util['nodes']) or 'no node'}); "
           f"the seeds' target is {pct(util['target'])}+.", ""]
    return out + _md_table([f"{util['bucket_s'] // 60} min from", "busy slots", "utilisation"],
                           [[b["label"], f"{b['busy_slots']:.2f}", pct(b["utilisation"])] for b in util["buckets"]])


def _attempts(fig: dict) -> list[str]:
    out = ["## Attempts (Gantt data)", ""]
    if fig["gantt"]["inferred_nodes"]:
        out += ["Lanes of " + ", ".join(_md(n) for n in fig["gantt"]["inferred_nodes"])
                + " are assigned greedily: those attempts did not record their slot.", ""]
    return out + _md_table(["spec", "#", "node", "slot", "start", "end", "outcome", "executor", "tokens in",
                            "tokens out", "cost", "reason"],
                           [[a["task_id"], a["number"], a["node"], a["lane"], a["start_local"], a["end_local"],
                             a["category"], a["executor"], *attempt_cost(a), a["reason"]]
                            for a in fig["gantt"]["attempts"]])


def _usage(fig: dict) -> list[str]:
    usage = fig["usage"]
    out = ["## Tokens and cost", "",
           f"Day total: {usage['total']['attempts']} collected attempts, "
           f"{spent.tokens_text(usage['total']['input_tokens'])} tokens in, "
           f"{spent.tokens_text(usage['total']['output_tokens'])} tokens out, cost {spent.cost_text(usage['total'])}. "
           f"Counted: {usage['definition']}. Source: {usage['source']}.", ""]
    for key in ("executor", "node"):
        out += [f"### By {key}", ""]
        out += _md_table([key, "attempts", "tokens in", "tokens out", "cost"], usage_rows(usage, key))
    return out


def _cycle(fig: dict) -> list[str]:
    cycle, aps = fig["cycle"], fig["attempts_per_spec"]
    return ["## Cycle time and attempts", "",
            f"Cycle time ({cycle['definition']}): median {duration(cycle['median_s'])}, "
            f"p90 {duration(cycle['p90_s'])}, over {cycle['count']} merges.", "",
            f"Attempts per spec: {aps['attempts']} attempts for {aps['specs']} specs, mean "
            + (f"{aps['mean']:.2f}" if aps["mean"] is not None else "n/a") + f", max {aps['max']}; "
            + "distribution " + (", ".join(f"{k} attempt(s): {v} specs" for k, v in aps["histogram"].items()) or "none")
            + "; by kind " + (", ".join(f"{k} {v}" for k, v in aps["by_kind"].items()) or "none") + ".", ""]


def _failures(fig: dict) -> list[str]:
    failures = fig["failures"]
    out = ["## Failures", "", f"{failures['total']} failures: "
           + (", ".join(f"{k} {v}" for k, v in failures["by_stage"].items()) or "none") + " (stage).", ""]
    for key in ("executor", "node"):
        out += [f"### By {key}", ""]
        out += _md_table([key, "attempts", "failures (node + after)", "reasons"],
                         [[g[key], g["attempts"], f"{g['failures']} ({g['node_failures']} + {g['after_node']})",
                           "; ".join(f"{r['count']}× {r['reason']}" for r in g["reasons"]) or "-"]
                          for g in failures[f"by_{key}"]])
    return out


def _rate_limits(fig: dict) -> list[str]:
    limits = fig["rate_limits"]
    return ["## Rate limits", "",
            f"{limits['attempts_rate_limited']} of {limits['attempts_read']} attempts with a readable status hit a rate "
            f"limit ({limits['attempts']} attempts started; source: {limits['source']}). "
            f"Rate-limited tries: {_counts(limits['tries_rate_limited'])}. Fallbacks: {_counts(limits['fallbacks'])}. "
            f"Rounds where every executor was rate limited: {limits['chain_exhausted']}.", ""]


def _conflicts(fig: dict) -> list[str]:
    conflicts = fig["conflicts"]
    return ["## Merge conflicts", "",
            f"{plural(conflicts['count'], 'conflict')} in {plural(conflicts['merge_tries'], 'merge try')}"
            + (f" ({pct(conflicts['share'])})" if conflicts["share"] is not None else "")
            + (": " + ", ".join(_md(s) for s in conflicts["specs"]) if conflicts["specs"] else "") + ".", ""]


def _counts(mapping: dict[str, int]) -> str:
    return ", ".join(f"{_md(k)} {v}" for k, v in mapping.items()) or "none"


def _md_table(header: list[str], rows: list[list[Any]]) -> list[str]:
    if not rows:
        return ["None.", ""]
    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows] + [""])
