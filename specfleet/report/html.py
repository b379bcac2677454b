# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The daily report as one self-contained HTML page: inline CSS, inline SVG charts, no script, no external address.

Every number shown is tagged ``<span class="figure" data-key=...>`` and every table
``data-table=...`` so tools (and the browser test) find them. Nothing here reads the store
or computes a figure.
"""
from __future__ import annotations

from typing import Any

from specfleet.model.durations import format_duration_words as duration
from specfleet.model.ending import CATEGORY_ORDER
from specfleet.report import usage as spent
from specfleet.report.charts import gantt_svg, utilisation_svg
from specfleet.report.text import escape as _e
from specfleet.report.text import pct, usage_rows

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



def _figure(key: str, text: Any) -> str:
    """A number the page shows, tagged so tools (and the browser test) can find it."""
    return f'<span class="figure" data-key="{_e(key)}">{_e(text)}</span>'



def html(fig: dict) -> str:
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>specfleet daily report: {_e(fig['project'])} {_e(fig['day'])}</title>",
             f"<style>{CSS}</style></head><body>",
             f"<h1>Daily report: {_e(fig['project'])}, {_e(fig['day'])}</h1>",
             f'<p class="muted">Times in {_e(fig["timezone"])}. Generated {_e(fig["generated_local"])}'
             + ("" if fig["complete"] else " (the day is not over: figures up to now)") + ".</p>"]
    for section in (_summary, _signals, _gantt, _utilisation, _states_merges_and_blocked, _cycle, _failures,
                    _rate_limits, _usage, _conflicts):
        parts += section(fig)
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _summary(fig: dict) -> list[str]:
    success, util, cycle = fig["success"], fig["utilisation"], fig["cycle"]
    rate = (f"{_figure('success.rate', pct(success['rate']))}<div class=\"label\">"
            f"{_figure('success.succeeded', success['succeeded'])} of {_figure('success.decided', success['decided'])}"
            " decided specs</div>")
    cards = [("success rate", rate),
             ("merged today", _figure("merged", len(fig["merges"]["today"]))),
             ("in review", _figure("in_review", len(fig["merges"]["in_review"]))),
             ("blocked", _figure("blocked", len(fig["blocked"]))),
             ("attempts", _figure("attempts", fig["attempts_per_spec"]["attempts"])),
             ("slot utilisation", f"{_figure('utilisation', pct(util['average']))}<div class=\"label\">target "
                                  f"{_e(pct(util['target']))}+</div>"),
             ("cycle time median / p90", f"{_figure('cycle.median', duration(cycle['median_s']))} / "
                                         f"{_figure('cycle.p90', duration(cycle['p90_s']))}"),
             ("cost", f"{_figure('usage.cost', spent.cost_text(fig['usage']['total']))}<div class=\"label\">"
                      f"{_figure('usage.input_tokens', spent.tokens_text(fig['usage']['total']['input_tokens']))} in / "
                      f"{_figure('usage.output_tokens', spent.tokens_text(fig['usage']['total']['output_tokens']))} "
                      "out tokens</div>")]
    return ['<section id="summary"><div class="cards">' + "".join(
        f'<div class="card"><div class="label">{_e(label)}</div><div class="value">{value}</div></div>'
        for label, value in cards) + "</div>",
        f'<p class="muted">Success rate: {_e(success["definition"])}. Attempted this day: '
        f'{_figure("success.attempted", success["attempted"])} specs, '
        f'{_figure("success.undecided", success["undecided"])} not decided yet'
        + (" (" + _e(", ".join(f"{k} {v}" for k, v in success["undecided_states"].items())) + ")"
           if success["undecided_states"] else "") + ".</p></section>"]


def _signals(fig: dict) -> list[str]:
    parts = ['<section id="signals"><h2>Scaling signals</h2>']
    for signal in fig["signals"]:
        state = {True: "on", False: "off", None: "na"}[signal["triggered"]]
        word = {True: "TRIGGERED", False: "not triggered", None: "not evaluated"}[signal["triggered"]]
        parts.append(f'<div class="signal {state}" data-signal="{_e(signal["key"])}" data-triggered="{state}">'
                     f"<strong>{_e(signal['rule'])}</strong>: {_e(word)}. {_e(signal['measure'])}. "
                     f"<em>{_e(signal['advice'])}</em>.</div>")
    return [*parts, "</section>"]


def _gantt(fig: dict) -> list[str]:
    parts = ['<section id="gantt"><h2>Attempts per node and slot</h2>',
             '<div class="legend">' + "".join(f'<span><span class="swatch {k}"></span>{_e(k)}</span>'
                                              for k in CATEGORY_ORDER) + "</div>"]
    if fig["gantt"]["inferred_nodes"]:
        parts.append('<p class="muted">Lanes of ' + _e(", ".join(fig["gantt"]["inferred_nodes"]))
                     + " are assigned greedily (first free lane): those attempts did not record their slot.</p>")
    return [*parts, gantt_svg(fig) + "</section>"]


def _utilisation(fig: dict) -> list[str]:
    util = fig["utilisation"]
    nodes = ", ".join(f"{n['name']} {n['slots']}" for n in util["nodes"]) or "no node"
    return ['<section id="utilisation"><h2>Slot utilisation</h2>',
            f"<p>Average over the active period "
            f"({_e(fig['gantt']['axis'].get('active_start_local', '-'))}–"
            f"{_e(fig['gantt']['axis'].get('active_end_local', '-'))}, {_e(duration(util['active_s']))}): "
            f"<strong>{_figure('utilisation.average', pct(util['average']))}</strong> of "
            f"{_figure('capacity', util['capacity_slots'])} slots ({_e(nodes)}). "
            f"The seeds' target is {_e(pct(util['target']))}+"
            + ("" if util["meets_target"] is None else (": met." if util["meets_target"] else ": not met."))
            + f" Buckets of {util['bucket_s'] // 60} min.</p>",
            utilisation_svg(fig) + "</section>"]


def _states_merges_and_blocked(fig: dict) -> list[str]:
    return ['<section id="states"><h2>Specs by state at the end of the day</h2>',
            _table(["state", "specs"], [[s, _figure(f"state.{s}", n)] for s, n in fig["states"].items()]
                   + [["total", _figure("specs_total", fig["specs_total"])]], raw=True) + "</section>",
            '<section id="merges"><h2>Merged today</h2>',
            _table(["spec", "merged", "promoted", "reverted"],
                   [[m["task_id"], m["merged_local"], "yes" if m["promoted"] else "no",
                     "yes" if m["reverted"] else "no"] for m in fig["merges"]["today"]]),
            "<h2>In review (on integration, not promoted)</h2>",
            _table(["spec", "merged", "waiting by then"], [[m["task_id"], m["merged_local"], duration(m["waiting_s"])]
                                                           for m in fig["merges"]["in_review"]]) + "</section>",
            '<section id="blocked"><h2>Blocked</h2>'
            + _table(["spec", "reason"], [[b["task_id"], b["reason"]] for b in fig["blocked"]])
            + "<h2>Failed</h2>" + _table(["spec", "reason"], [[b["task_id"], b["reason"]] for b in fig["failed"]])
            + "</section>"]


def _cycle(fig: dict) -> list[str]:
    cycle, aps = fig["cycle"], fig["attempts_per_spec"]
    mean = f"{aps['mean']:.2f}" if aps["mean"] is not None else "n/a"
    return ['<section id="cycle"><h2>Cycle time and attempts</h2>'
            f"<p>Cycle time ({_e(cycle['definition'])}): median "
            f"{_figure('cycle.median_s', duration(cycle['median_s']))}, p90 "
            f"{_figure('cycle.p90_s', duration(cycle['p90_s']))}, over {_figure('cycle.count', cycle['count'])} "
            "merges.</p>"
            + _table(["spec", "cycle time"], [[s["task_id"], duration(s["seconds"])] for s in cycle["samples"]])
            + f"<p>Attempts per spec: {_figure('aps.attempts', aps['attempts'])} attempts for "
            f"{_figure('aps.specs', aps['specs'])} specs, mean "
            f"{_figure('aps.mean', mean)}, max {_figure('aps.max', aps['max'])}.</p>"
            + _table(["attempts", "specs"], [[k, v] for k, v in aps["histogram"].items()]) + "</section>"]


def _failures(fig: dict) -> list[str]:
    failures = fig["failures"]
    parts = ['<section id="failures"><h2>Failures</h2>'
             f"<p>{_figure('failures.total', failures['total'])} failures; by stage: "
             f"{_e(', '.join(f'{k} {v}' for k, v in failures['by_stage'].items()) or 'none')}. Node attempts that "
             "ended failed, infra or lost, and spec failures found after the node (verify, merge, review), charged "
             "to the executor and node of the attempt that produced the branch.</p>"]
    for key in ("executor", "node"):
        parts.append(f"<h3>By {key}</h3>" + _table(
            [key, "attempts", "failures", "node", "after node", "reasons"],
            [[g[key], g["attempts"], g["failures"], g["node_failures"], g["after_node"],
              "; ".join(f"{r['count']}× {r['reason']}" for r in g["reasons"]) or "-"]
             for g in failures[f"by_{key}"]], key=f"failures.{key}"))
    return [*parts, "</section>"]


def _rate_limits(fig: dict) -> list[str]:
    limits = fig["rate_limits"]
    return ['<section id="rate-limits"><h2>Rate limits</h2>'
            f"<p>{_figure('rate.attempts', limits['attempts_rate_limited'])} of "
            f"{_figure('rate.read', limits['attempts_read'])} attempts with a readable status hit a rate limit "
            f"({limits['attempts']} attempts started; source: {_e(limits['source'])}). Rounds where every executor "
            f"was rate limited: {_figure('rate.exhausted', limits['chain_exhausted'])}.</p>"
            + _table(["executor", "rate-limited tries"], [[k, v] for k, v in limits["tries_rate_limited"].items()])
            + _table(["fallback", "times"], [[k, v] for k, v in limits["fallbacks"].items()]) + "</section>"]


def _usage(fig: dict) -> list[str]:
    usage = fig["usage"]
    parts = ['<section id="usage"><h2>Tokens and cost</h2>'
             f"<p>Day total: {_figure('usage.attempts', usage['total']['attempts'])} collected attempts, "
             f"{_figure('usage.total.input_tokens', spent.tokens_text(usage['total']['input_tokens']))} tokens in, "
             f"{_figure('usage.total.output_tokens', spent.tokens_text(usage['total']['output_tokens']))} tokens out, "
             f"cost {_figure('usage.total.cost', spent.cost_text(usage['total']))}.</p>"
             f'<p class="muted">Counted: {_e(usage["definition"])}. Source: {_e(usage["source"])}.</p>']
    for key in ("executor", "node"):
        parts.append(f"<h3>By {key}</h3>" + _table([key, "attempts", "tokens in", "tokens out", "cost"],
                                                   usage_rows(usage, key), key=f"usage.{key}"))
    return [*parts, "</section>"]


def _conflicts(fig: dict) -> list[str]:
    conflicts = fig["conflicts"]
    return ['<section id="conflicts"><h2>Merge conflicts</h2>'
            f"<p>{_figure('conflicts', conflicts['count'])} conflicts in "
            f"{_figure('merge_tries', conflicts['merge_tries'])} merge tries"
            + (f" ({_e(pct(conflicts['share']))})" if conflicts["share"] is not None else "")
            + (": " + _e(", ".join(conflicts["specs"])) if conflicts["specs"] else "") + ".</p></section>"]


def _table(header: list[str], rows: list[list[Any]], raw: bool = False, key: str | None = None) -> str:
    if not rows:
        return '<p class="muted">None.</p>'
    cell = (lambda v: str(v)) if raw else _e
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f'<td{" class=num" if isinstance(v, (int, float)) else ""}>{cell(v)}</td>'
                                    for v in row) + "</tr>" for row in rows)
    attribute = f' data-table="{_e(key)}"' if key else ""
    return f"<table{attribute}><tr>{head}</tr>{body}</table>"
