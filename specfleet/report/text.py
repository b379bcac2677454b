# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""How the report's figures are written as words, the same in the Markdown, the HTML and the playbook's output."""
from __future__ import annotations

import html as _html
from typing import Any

from specfleet.report import usage as spent


def escape(value: Any) -> str:
    """Any value as HTML text (attribute-safe): untrusted strings (spec ids, reasons) render as text."""
    return _html.escape(str(value), quote=True)


def plural(count: int, noun: str) -> str:
    if count == 1:
        return f"1 {noun}"
    return f"{count} {noun[:-1] + 'ies' if noun.endswith('y') else noun + 's'}"


def pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f} %"


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
    rate = f"{pct(success['rate'])} ({success['succeeded']} of {success['decided']})" if success["decided"] else "n/a"
    return (f"{fig['project']} {fig['day']}: success {rate}, {len(fig['merges']['today'])} merged, "
            f"{len(fig['merges']['in_review'])} in review, {len(fig['blocked'])} blocked, "
            f"utilisation {pct(fig['utilisation']['average'])}, {spent_short(fig['usage']['total'])}")


def spent_short(total: dict) -> str:
    return (f"tokens {spent.tokens_text(total['input_tokens'])} in / {spent.tokens_text(total['output_tokens'])} out, "
            f"cost {spent.cost_text(total)}")


def attempt_cost(view: dict) -> list[str]:
    """Tokens in, tokens out and cost of one attempt: "-" until it is collected, an unknown cost as "unknown"."""
    if not view["collected"]:
        return ["-", "-", "-"]
    cost = "unknown" if view["cost_usd"] is None else spent.dollars(float(view["cost_usd"]))
    return [spent.tokens_text(view["input_tokens"]), spent.tokens_text(view["output_tokens"]), cost]


def usage_rows(usage: dict, key: str) -> list[list[Any]]:
    """``key``, attempts, tokens in, tokens out, cost: one row per executor (or node), then the day's total."""
    def cells(e: dict) -> list[Any]:
        return [e["attempts"], spent.tokens_text(e["input_tokens"]), spent.tokens_text(e["output_tokens"]),
                spent.cost_text(e)]
    rows = [[e[key] if e[key] is not None else "(no node)", *cells(e)] for e in usage[f"by_{key}"]]
    return rows + [["total", *cells(usage["total"])]] if rows else []
