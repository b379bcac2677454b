# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Tokens and cost of attempts: summed from :meth:`Store.usage_rows <specfleet.store.core.Store.usage_rows>`, written for people.

Where the numbers come from: each agent CLI's own output (the runner reads the model,
tokens in and out, and the cost when the CLI states one); without a stated cost, the
executor's ``prices: {input, output}`` (USD per million tokens) from the inventory; else
the cost is unknown. An unknown cost is ``None`` here and "unknown" on screen, never 0:
the sum over a group is the known part, and ``cost_unknown`` counts the attempts left out.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

FIELDS = ("attempts", "input_tokens", "output_tokens", "cost_usd", "cost_unknown")
SOURCE = ("tokens from each agent CLI's own output; cost from the CLI when it reports one, else from the executor's "
          "prices per million tokens in the inventory, else unknown")


def empty() -> dict[str, Any]:
    return {"attempts": 0, "input_tokens": 0, "output_tokens": 0, "cost_usd": None, "cost_unknown": 0}


def _add(total: dict[str, Any], row: dict[str, Any]) -> None:
    total["attempts"] += int(row["attempts"] or 0)
    total["input_tokens"] += int(row["input_tokens"] or 0)
    total["output_tokens"] += int(row["output_tokens"] or 0)
    total["cost_unknown"] += int(row["cost_unknown"] or 0)
    if row["cost_usd"] is not None:
        total["cost_usd"] = (total["cost_usd"] or 0.0) + float(row["cost_usd"])


def _done(total: dict[str, Any]) -> dict[str, Any]:
    if total["cost_usd"] is not None:
        total["cost_usd"] = round(total["cost_usd"], 6)
    return total


def _order(key: Any) -> tuple[bool, str]:
    return key is not None, "" if key is None else str(key)   # None first, as SQL's ORDER BY puts NULL


def total(rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    out = empty()
    for row in rows:
        _add(out, row)
    return _done(out)


def breakdown(rows: Iterable[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """One entry per value of ``key`` (``executor``, ``node``, ``day``, ``task_id``...), sorted as :meth:`Store.usage`."""
    groups: dict[Any, dict[str, Any]] = {}
    for row in rows:
        _add(groups.setdefault(row[key], empty()), row)
    return [{key: k, **_done(groups[k])} for k in sorted(groups, key=_order)]


def rollup(rows: Sequence[dict[str, Any]], by: Sequence[str] = ("executor", "node", "day")) -> dict[str, Any]:
    """``{"total": {...}, "by_executor": [...], ...}``: the rows summed overall and per each of ``by``."""
    return {"total": total(rows), **{f"by_{key}": breakdown(rows, key) for key in by}}


def per_project(rows: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        out.setdefault(row["project"], []).append(row)
    return out


# -- for people --------------------------------------------------------------------------------

def tokens_text(count: int | None) -> str:
    return "-" if count is None else f"{int(count):,}"


def dollars(amount: float) -> str:
    return f"${amount:,.2f}" if amount >= 1 else f"${amount:.4f}"


def cost_text(entry: dict[str, Any]) -> str:
    """``$0.0420``; ``$0.0420 (+2 unknown)`` when some attempts' cost is unknown; ``unknown`` when none is known."""
    if entry.get("cost_usd") is None:
        return "unknown" if entry.get("attempts", 1) else "-"
    unknown = int(entry.get("cost_unknown") or 0)
    return dollars(float(entry["cost_usd"])) + (f" (+{unknown} unknown)" if unknown else "")


def line(entry: dict[str, Any]) -> str:
    """``3 attempts, 12,000 in / 3,400 out tokens, $0.0420``."""
    attempts = int(entry["attempts"])
    return (f"{attempts} attempt{'' if attempts == 1 else 's'}, {tokens_text(entry['input_tokens'])} in / "
            f"{tokens_text(entry['output_tokens'])} out tokens, cost {cost_text(entry)}")
