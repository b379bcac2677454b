# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The HTML report's two inline SVG charts: attempts per node and slot (a Gantt chart), and slot utilisation.

Both share the time axis of the figures (``fig["gantt"]["axis"]``) and its x scale, so a bar
and the utilisation of its bucket line up.
"""
from __future__ import annotations

from specfleet.report.text import attempt_cost, pct
from specfleet.report.text import escape as _e

GANTT_LEFT, GANTT_WIDTH, ROW, TOP = 150, 1150, 22, 28


def _x(ts: float, axis: dict) -> float:
    return GANTT_LEFT + (ts - axis["start"]) / (axis["end"] - axis["start"]) * GANTT_WIDTH


def gantt_svg(fig: dict) -> str:
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
               + ("; tokens {} in / {} out, cost {}".format(*attempt_cost(attempt)) if attempt["collected"] else ""))
        out.append(f'<rect class="bar {_e(attempt["category"])}" data-task="{_e(attempt["task_id"])}"'
                   f' data-attempt="{attempt["number"]}" x="{x1:.1f}" y="{y}" width="{max(2.0, x2 - x1):.1f}"'
                   f' height="{ROW - 6}" rx="2"><title>{_e(tip)}</title></rect>')
        if x2 - x1 > 40:
            out.append(f'<text x="{x1 + 4:.1f}" y="{y + ROW / 2 + 1:.1f}" style="fill:#fff">'
                       f'{_e(attempt["task_id"])}#{attempt["number"]}</text>')
    out.append("</svg>")
    return "".join(out)


def utilisation_svg(fig: dict) -> str:
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
                   f' height="{top + plot - y(share):.1f}"><title>{_e(bucket["label"])}: {_e(pct(bucket["utilisation"]))}'
                   f" ({bucket['busy_slots']:.2f} of {util['capacity_slots']} slots busy)</title></rect>")
    for tick in axis["ticks"]:
        out.append(f'<text x="{_x(tick["ts"], axis):.1f}" y="{top + plot + 16}" text-anchor="middle">'
                   f'{_e(tick["label"])}</text>')
    right = GANTT_LEFT + GANTT_WIDTH
    out.append(f'<line class="target" x1="{GANTT_LEFT}" y1="{y(util["target"]):.1f}" x2="{right}"'
               f' y2="{y(util["target"]):.1f}"/><text x="{right - 4}" y="{y(util["target"]) - 4:.1f}" text-anchor="end">'
               f"target {_e(pct(util['target']))}</text>")
    if util["average"] is not None:
        out.append(f'<line class="avg" x1="{GANTT_LEFT}" y1="{y(util["average"]):.1f}" x2="{right}"'
                   f' y2="{y(util["average"]):.1f}"/><text x="{GANTT_LEFT + 4}" y="{y(util["average"]) - 4:.1f}">'
                   f"average {_e(pct(util['average']))}</text>")
    out.append("</svg>")
    return "".join(out)
