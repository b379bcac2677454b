"""The dispatch run's final report (``specfleet_report``): where its specs ended, and what its attempts cost.

A real store: two dispatch runs on one project, attempts collected with the usage the
runner sums (``Store.record_attempt(usage=...)``); the report counts its own run only.
"""
from __future__ import annotations

import pytest

from specfleet.dispatch.leases import LeaseBook
from specfleet.dispatch.policy import NodeInfo
from specfleet.ops import controller
from specfleet.store.core import Store
from tests.conftest import spec_text
from tests.unit.test_leases import feed

N1 = NodeInfo("n1", 3, labels=frozenset({"glm", "codex", "minimax"}))


def spend(input_tokens: int, output_tokens: int, cost: float | None) -> dict:
    return {"input_tokens": input_tokens, "output_tokens": output_tokens, "cost_usd": cost, "models": ["m"]}


@pytest.fixture
def runs(projects, tmp_path):
    """Run A: S1 twice with glm ($0.10 then $0.05), S2 once with codex (cost unknown). Run B: S3 with minimax."""
    db = tmp_path / "state.db"
    with Store(db) as store:
        feed(projects, store, **{
            "S1.md": spec_text("S1", modifies=["src/a.py"], retries=1),
            "S2.md": spec_text("S2", modifies=["src/b.py"], executor="codex", retries=0),
            "S3.md": spec_text("S3", modifies=["src/c.py"], executor="minimax")})
        first = LeaseBook(store)
        run_a = first.open_run("demo", exclusive=False)

        def attempt(book: LeaseBook, task_id: str, executor: str, usage: dict | None, ok: bool) -> None:
            grant = book.grant("demo", [N1], only={task_id}).granted[0]
            store.record_attempt("demo", task_id, grant.attempt, executor=executor, usage=usage)
            book.finish(grant, ok, None if ok else "verify failed")

        attempt(first, "S1", "glm", spend(10_000, 2_000, 0.10), ok=False)
        attempt(first, "S1", "glm", spend(4_000, 1_000, 0.05), ok=True)
        attempt(first, "S2", "codex", spend(7_000, 500, None), ok=False)
        second = LeaseBook(store)
        run_b = second.open_run("demo", exclusive=False)
        attempt(second, "S3", "minimax", spend(900, 90, 0.01), ok=True)
    return str(db), run_a, run_b


@pytest.mark.parametrize("which, task_ids, expected_lines", [
    ("a", ["S1", "S2"], [
        "tokens and cost of this run: 3 attempts, 21,000 in / 3,500 out tokens, cost $0.1500 (+1 unknown)",
        "  executor codex: 1 attempt, 7,000 in / 500 out tokens, cost unknown",
        "  executor glm: 2 attempts, 14,000 in / 3,000 out tokens, cost $0.1500",
        "  spec S1: 2 attempts, 14,000 in / 3,000 out tokens, cost $0.1500",
        "  spec S2: 1 attempt, 7,000 in / 500 out tokens, cost unknown"]),
    ("b", ["S3"], [
        "tokens and cost of this run: 1 attempt, 900 in / 90 out tokens, cost $0.0100",
        "  executor minimax: 1 attempt, 900 in / 90 out tokens, cost $0.0100",
        "  spec S3: 1 attempt, 900 in / 90 out tokens, cost $0.0100"]),
    (None, ["S1"], []),                              # no run: nothing to sum
], ids=["run-a", "run-b", "no-run"])
def test_the_run_report_adds_tokens_and_cost_per_executor_and_spec(runs, which, task_ids, expected_lines):
    db, run_a, run_b = runs
    run_id = {"a": run_a, "b": run_b, None: None}[which]
    report = controller.run_report(db, "demo", run_id, task_ids, "completed")
    assert report["usage_lines"] == expected_lines
    if run_id is None:
        assert report["usage"]["total"]["attempts"] == 0 and report["usage"]["total"]["cost_usd"] is None


def test_the_run_report_s_figures_are_the_store_s(runs):
    db, run_a, _run_b = runs
    report = controller.run_report(db, "demo", run_a, ["S1", "S2"], "completed")
    assert report["summary"] == "demo: 2 specs in this run: 1 completed, 1 failed"
    assert report["not_completed"] == ["S2 failed: verify failed"] and report["attempts"] == {"S1": 2, "S2": 1}
    usage = report["usage"]
    assert usage["total"] == {"attempts": 3, "input_tokens": 21_000, "output_tokens": 3_500, "cost_usd": 0.15,
                              "cost_unknown": 1}
    assert usage["by_task_id"] == [
        {"task_id": "S1", "attempts": 2, "input_tokens": 14_000, "output_tokens": 3_000, "cost_usd": 0.15,
         "cost_unknown": 0},
        {"task_id": "S2", "attempts": 1, "input_tokens": 7_000, "output_tokens": 500, "cost_usd": None,
         "cost_unknown": 1}]
    with Store(db) as store:    # the whole project, both runs: run A's executors plus run B's minimax
        project_wide = {e["executor"]: e for e in store.usage("demo", by="executor")}
    assert {e["executor"]: {k: v for k, v in e.items() if k != "cost_unknown"} for e in usage["by_executor"]} == {
        k: v for k, v in project_wide.items() if k != "minimax"}
