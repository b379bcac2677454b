"""The daily report's figures, computed from a real store holding a known day of work.

The history is made with the same calls the dispatcher and the landing stages make
(``LeaseBook.grant``/``finish``, ``Store.record_attempt``, ``Store.transition``,
``Store.send_back``, a merge recorded the way the merge queue records it), on a clock
the test sets, so every number of the report can be worked out by hand below.
"""
from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest

from specfleet.dispatch.leases import Grant, LeaseBook
from specfleet.dispatch.policy import NodeInfo
from specfleet.model.states import SpecState
from specfleet.report import daily
from specfleet.store import base as store_base
from specfleet.store import core as store_module
from specfleet.store.core import Store
from specfleet.validate.checks import validate_project
from tests.conftest import ProjectFactory, spec_text

DAY = "2024-05-14"
_, DAY_START, DAY_END = daily.day_bounds(DAY, UTC)
MIN = 60.0


def at(hhmm: str, days: int = 0) -> float:
    hours, minutes = (int(x) for x in hhmm.split(":"))
    return DAY_START + days * 86400 + hours * 3600 + minutes * 60


class Clock:
    """The store's clock in these tests (every event, attempt and lease stamp reads it)."""

    def __init__(self) -> None:
        self.t = at("08:00", days=-1)

    def __call__(self) -> float:
        return self.t


class History:
    """Drives a project through the real state store on the test's clock."""

    def __init__(self, store: Store, clock: Clock, artifacts: Path, project: str = "demo"):
        self.store, self.clock, self.artifacts, self.project = store, clock, artifacts, project
        # Leases are not renewed here, so they must not expire while the test's clock jumps.
        self.book = LeaseBook(store, ttl=30 * 86400)
        self.book.open_run(project, exclusive=False)
        self.grants: dict[str, Grant] = {}

    def at(self, when: float) -> History:
        assert when >= self.clock.t, "the history is written in time order"
        self.clock.t = when
        return self

    def nodes(self, *nodes: NodeInfo) -> None:
        """Record the inventory's nodes (a pass that starts nothing)."""
        self.book.grant(self.project, list(nodes), only=[])

    def start(self, task_id: str, node: NodeInfo) -> Grant:
        granted = self.book.grant(self.project, [node], only=[task_id]).granted
        assert [g.task_id for g in granted] == [task_id]
        self.grants[task_id] = granted[0]
        return granted[0]

    def end(self, task_id: str, ok: bool = True, reason: str | None = None, infra: bool = False,
            executor: str | None = None, tries: list[list[dict]] | None = None, artifacts: bool = False,
            usage: dict | None = None) -> None:
        grant = self.grants.pop(task_id)
        if executor or tries is not None or artifacts or usage:
            folder = self.artifacts / task_id / f"{grant.attempt}-{grant.job_run}"
            folder.mkdir(parents=True)
            if tries is not None:
                (folder / "status.json").write_text(json.dumps(
                    {"state": "succeeded" if ok else "failed", "final": True, "executor": executor,
                     "rounds": [{"round": i + 1, "executor": executor, "tries": t} for i, t in enumerate(tries)]}))
            self.store.record_attempt(self.project, task_id, grant.attempt, executor=executor, artifacts=str(folder),
                                      result={"ok": ok}, usage=usage)
        self.book.finish(grant, ok, reason, infrastructure=infra)

    def verify(self, task_id: str) -> None:
        self.store.transition(self.project, task_id, SpecState.VERIFIED, expect_state=SpecState.COMPLETED)

    def merge(self, task_id: str) -> None:
        """What the merge queue records when a spec lands (``landing._record_merged``)."""
        with self.store.transaction() as db:
            db.execute("INSERT INTO merges (project, task_id, commit_sha, merge_commit, batch_id, tested_commit, merged_at)"
                       " VALUES (?, ?, ?, ?, NULL, ?, ?)", (self.project, task_id, "c" * 40, "m" * 40, "t" * 40,
                                                            self.clock.t))
            self.store._transition(db, self.project, task_id, SpecState.MERGED, reason=None)

    def promote(self, task_id: str) -> None:
        with self.store.transaction() as db:
            db.execute("UPDATE merges SET promoted_at = ?, promoted_commit = ? WHERE project = ? AND task_id = ?",
                       (self.clock.t, "p" * 40, self.project, task_id))

    def conflict(self, task_id: str, files: list[str]) -> str:
        return self.store.send_back(self.project, task_id,
                                    f"merge conflict with specfleet/{self.project}/integration in {', '.join(files)}",
                                    "start again from the integration tip", None, files)


@pytest.fixture
def clock(monkeypatch) -> Clock:
    ticking = Clock()
    monkeypatch.setattr(store_base, "now", ticking)
    return ticking


def feed(projects: ProjectFactory, store: Store, **specs: str) -> None:
    projects.project("demo", **specs)
    report = validate_project(projects.specs_root, "demo", None, "glm", display_root="specs")
    assert report.ok, report.summary()
    store.feed(report)


def spend(input_tokens: int, output_tokens: int, cost: float | None, model: str = "m") -> dict:
    """An attempt's usage as the runner sums it over its tries (``runner.sum_usage``)."""
    return {"input_tokens": input_tokens, "output_tokens": output_tokens, "cost_usd": cost, "models": [model]}


N1, N2, N3 = NodeInfo("n1", 2), NodeInfo("n2", 1), NodeInfo("n3", 1)
N4_OFF = NodeInfo("n4", 2, enabled=False)
ALL_ATTEMPTS = 9


def good_day(projects: ProjectFactory, store: Store, clock: Clock, artifacts: Path) -> History:
    """Nine specs, one day (2024-05-14 UTC), seen at 10:50 while F still runs.

    ==== =======================================================================
    Y    yesterday: ran 15:00-15:30 on n1, merged 16:00, never promoted
    A    09:00-09:20 n1/0 ok (glm rate limited, minimax did it), merged 09:30, promoted 10:45
    B    09:00-09:10 n1/1 verify failed; 09:10-09:40 n2/0 ok; merged 10:00
    C    09:10-09:30 n1/1 agent failed, no retries: failed; D (depends on C) blocked
    E    09:20-09:50 n1/0 ok; conflict 10:00; 10:00-10:30 n1/0 ok; merged 10:40
    F    09:40-10:00 n2/0 node did not answer (infra); 10:00-     n1/1 still running
    G    queued all day
    H    10:00-10:20 n2/0 ok: completed, not verified yet
    ==== =======================================================================

    Tokens and cost of the collected attempts (the others recorded none):

    ==== ======== ==== ====== ===== ======================================
    Y    glm      n1   50,000 5,000 $0.20 (yesterday: not in the day)
    A    minimax  n1   20,000 4,000 $0.012 (the CLI said)
    C    codex    n1    8,000 1,000 unknown (no cost, no prices)
    B#2  glm      n2   30,000 6,000 $0.03 (from the inventory's prices)
    H    glm      n2   10,000 2,000 $0.01
    ==== ======== ==== ====== ===== ======================================
    """
    clock.t = at("14:00", days=-1)
    feed(projects, store, **{
        "Y.md": spec_text("Y", modifies=["src/y.py"]),
        "A.md": spec_text("A", modifies=["src/a.py"]),
        "B.md": spec_text("B", modifies=["src/b.py"], retries=1),
        "C.md": spec_text("C", modifies=["src/c.py"], retries=0, executor="codex"),
        "D.md": spec_text("D", modifies=["src/d.py"], depends_on=["C"]),
        "E.md": spec_text("E", modifies=["src/e.py"], retries=1),
        "F.md": spec_text("F", modifies=["src/f.py"]),
        "G.md": spec_text("G", modifies=["src/g.py"], depends_on=["Y"], priority=9),
        "H.md": spec_text("H", modifies=["src/h.py"]),
    })
    run = History(store, clock, artifacts)
    run.nodes(N1, N2, N3, N4_OFF)
    run.at(at("15:00", days=-1)).start("Y", N1)
    run.at(at("15:30", days=-1)).end("Y", executor="glm", usage=spend(50_000, 5_000, 0.2))
    run.at(at("15:40", days=-1)).verify("Y")
    run.at(at("16:00", days=-1)).merge("Y")

    run.at(at("09:00")).start("A", N1)
    run.start("B", N1)
    run.at(at("09:10")).end("B", ok=False, reason="verify `pytest -q` failed with exit 1:\n3 failed, 9 passed")
    run.start("C", N1)
    run.start("B", N2)
    run.at(at("09:20")).end("A", executor="minimax", tries=[[
        {"executor": "glm", "exit": 1, "timed_out": False, "rate_limited": True},
        {"executor": "minimax", "exit": 0, "timed_out": False, "rate_limited": False}]],
        usage=spend(20_000, 4_000, 0.012, "minimax-m2"))
    run.start("E", N1)
    run.at(at("09:25")).verify("A")
    run.at(at("09:30")).merge("A")
    run.end("C", ok=False, reason="the agent (codex) exited with 1:\nerror: model overloaded", executor="codex",
            usage=spend(8_000, 1_000, None, "gpt-5-codex"))
    run.at(at("09:40")).end("B", executor="glm", artifacts=True,  # a folder without status.json
                            usage=spend(30_000, 6_000, 0.03, "glm-4.6"))
    run.start("F", N2)
    run.at(at("09:45")).verify("B")
    run.at(at("09:50")).end("E")
    run.at(at("09:55")).verify("E")
    run.at(at("10:00")).merge("B")
    run.end("F", ok=False, infra=True, reason="node n2 did not answer")
    assert run.conflict("E", ["src/e.py"]) == "queued"
    run.start("E", N1)
    run.start("F", N1)
    run.start("H", N2)
    run.at(at("10:20")).end("H", executor="glm", usage=spend(10_000, 2_000, 0.01, "glm-4.6"))
    run.at(at("10:30")).end("E")
    run.at(at("10:35")).verify("E")
    run.at(at("10:40")).merge("E")
    run.at(at("10:45")).promote("A")
    run.at(at("10:50"))
    return run


@pytest.fixture
def good(projects, tmp_path, clock):
    with Store(tmp_path / "state.db") as store:
        run = good_day(projects, store, clock, tmp_path / "artifacts")
        yield store, daily.figures(store, "demo", DAY_START, DAY_END, now=at("10:50"), tz=UTC), run


def test_states_success_rate_merges_and_blocked(good):
    _store, fig, _run = good
    assert fig["day"] == DAY and fig["timezone"] == "UTC (UTC+00:00)" and fig["complete"] is False
    assert fig["states"] == {"queued": 1, "running": 1, "completed": 1, "merged": 4, "failed": 1, "blocked": 1}
    assert fig["specs_total"] == 9
    success = fig["success"]
    assert success["attempted"] == 6                      # A B C E F H (Y ran yesterday; D, G never)
    assert (success["succeeded"], success["failed"], success["decided"]) == (4, 1, 5)
    assert success["rate"] == pytest.approx(0.8)
    assert success["succeeded_specs"] == ["A", "B", "E", "H"] and success["failed_specs"] == ["C"]
    assert success["undecided"] == 1 and success["undecided_states"] == {"running": 1}
    assert [m["task_id"] for m in fig["merges"]["today"]] == ["A", "B", "E"]
    assert [m["promoted"] for m in fig["merges"]["today"]] == [True, False, False]
    assert [(m["task_id"], m["waiting_s"]) for m in fig["merges"]["in_review"]] == [
        ("Y", at("10:50") - at("16:00", days=-1)), ("B", 50 * MIN), ("E", 10 * MIN)]
    assert fig["blocked"] == [{"task_id": "D", "reason": "dependency C failed"}]
    assert fig["failed"][0]["task_id"] == "C" and fig["failed"][0]["reason"].startswith("the agent (codex) exited")


def test_gantt_lanes_are_the_recorded_slots_of_the_nodes_in_service(good):
    _store, fig, _run = good
    gantt = fig["gantt"]
    assert [(x["node"], x["slot"]) for x in gantt["lanes"]] == [("n1", 0), ("n1", 1), ("n2", 0), ("n3", 0)]
    assert gantt["inferred_nodes"] == []
    bars = {(a["task_id"], a["number"]): (a["node"], a["lane"], a["start_local"], a["end_local"], a["category"])
            for a in gantt["attempts"]}
    assert bars == {
        ("A", 1): ("n1", 0, "09:00", "09:20", "succeeded"), ("B", 1): ("n1", 1, "09:00", "09:10", "failed"),
        ("C", 1): ("n1", 1, "09:10", "09:30", "failed"), ("B", 2): ("n2", 0, "09:10", "09:40", "succeeded"),
        ("E", 1): ("n1", 0, "09:20", "09:50", "succeeded"), ("F", 1): ("n2", 0, "09:40", "10:00", "infra"),
        ("E", 2): ("n1", 0, "10:00", "10:30", "succeeded"), ("F", 2): ("n1", 1, "10:00", "running", "running"),
        ("H", 1): ("n2", 0, "10:00", "10:20", "succeeded")}
    running = next(a for a in gantt["attempts"] if a["category"] == "running")
    assert running["shown_end"] == at("10:50")
    axis = gantt["axis"]
    assert (axis["start"], axis["end"]) == (at("09:00"), at("10:50"))
    assert [t["label"] for t in axis["ticks"]] == [f"{h:02d}:{m:02d}" for h in (9, 10) for m in range(0, 60, 10)]


def test_utilisation_per_bucket_and_over_the_active_period(good):
    _store, fig, _run = good
    util = fig["utilisation"]
    assert util["nodes"] == [{"name": "n1", "slots": 2}, {"name": "n2", "slots": 1}, {"name": "n3", "slots": 1}]
    assert util["capacity_slots"] == 4                       # n4 is disabled in the inventory
    # busy slot-minutes per 10 minutes from 09:00, by hand from the table in good_day()
    assert [b["busy_slot_s"] / MIN for b in util["buckets"]] == [20, 30, 30, 20, 20, 10, 30, 30, 20, 10, 10]
    assert [b["utilisation"] for b in util["buckets"]] == [0.5, 0.75, 0.75, 0.5, 0.5, 0.25, 0.75, 0.75, 0.5, 0.25, 0.25]
    assert util["busy_slot_s"] == 230 * MIN and util["active_s"] == 110 * MIN
    assert util["average"] == pytest.approx(230 / 440)      # 52.3 %
    assert util["target"] == 0.8 and util["meets_target"] is False


def test_cycle_time_attempts_per_spec_and_failures_by_executor_and_node(good):
    _store, fig, _run = good
    cycle = fig["cycle"]
    assert [(s["task_id"], s["seconds"] / MIN) for s in cycle["samples"]] == [("A", 30), ("B", 60), ("E", 80)]
    assert cycle["median_s"] == 60 * MIN and cycle["p90_s"] == 80 * MIN
    aps = fig["attempts_per_spec"]
    assert (aps["attempts"], aps["specs"], aps["max"]) == (9, 6, 2) and aps["mean"] == pytest.approx(1.5)
    assert aps["histogram"] == {"1": 3, "2": 3}
    assert aps["by_kind"] == {"infra": 1, "spec": 8}
    failures = fig["failures"]
    assert failures["total"] == 4 and failures["by_stage"] == {"merge": 1, "node": 3}
    assert failures["by_category"] == {"failed": 3, "infra": 1}
    by_executor = {g["executor"]: (g["attempts"], g["node_failures"], g["after_node"]) for g in failures["by_executor"]}
    assert by_executor == {"codex": (1, 1, 0), "glm": (7, 2, 1), "minimax": (1, 0, 0)}
    by_node = {g["node"]: (g["attempts"], g["node_failures"], g["after_node"]) for g in failures["by_node"]}
    assert by_node == {"n1": (6, 2, 1), "n2": (3, 1, 0)}
    glm = next(g for g in failures["by_executor"] if g["executor"] == "glm")
    assert glm["reasons"] == [{"reason": "merge conflict with specfleet/demo/integration in src/e.py", "count": 1},
                              {"reason": "node n2 did not answer", "count": 1},
                              {"reason": "verify `pytest -q` failed with exit 1", "count": 1}]


def test_rate_limit_fallbacks_come_from_the_collected_status(good):
    _store, fig, _run = good
    limits = fig["rate_limits"]
    assert (limits["attempts"], limits["attempts_read"], limits["attempts_rate_limited"]) == (9, 1, 1)
    assert limits["tries_rate_limited"] == {"glm": 1} and limits["fallbacks"] == {"glm → minimax": 1}
    assert limits["chain_exhausted"] == 0


def test_no_scaling_signal_on_a_good_day(good):
    _store, fig, _run = good
    queue = fig["queue"]
    # queued minutes in 09:00-10:50: C 10 + D 30 + E 20 + F 40 + G 110 + H 60 = 270; running = busy = 230
    assert queue["avg_queued"] == pytest.approx(270 / 110) and queue["avg_running"] == pytest.approx(230 / 110)
    assert (queue["queued_at_end"], queue["running_at_end"]) == (1, 1)
    assert fig["conflicts"] == {"count": 1, "specs": ["E"], "merge_tries": 4, "share": 0.25}
    signals = {s["key"]: s for s in fig["signals"]}
    assert {k: s["triggered"] for k, s in signals.items()} == {"add_nodes": False, "spec_quality": False,
                                                               "work_split": False}
    assert signals["spec_quality"]["measure"] == "1 of 5 decided specs failed (20.0 %)"
    assert signals["work_split"]["measure"] == "1 conflict in 4 merge tries (25.0 %)"
    assert daily.headline(fig) == {
        "day": DAY, "specs": 9, "attempted": 6, "succeeded": 4, "decided": 5, "success_rate": 0.8, "merged": 3,
        "in_review": 3, "blocked": 1, "failed": 1, "attempts": 9, "utilisation": pytest.approx(230 / 440),
        "cycle_median_s": 3600.0, "cycle_p90_s": 4800.0, "input_tokens": 68_000, "output_tokens": 13_000,
        "cost_usd": 0.052, "cost_unknown": 1, "signals": []}


def test_markdown_and_html_state_the_numbers_with_their_denominators(good):
    _store, fig, _run = good
    text = daily.markdown(fig)
    assert "| success rate | 80.0 % (4 of 5) |" in text
    assert "| merged today | 3 |" in text and "| in review | 3 |" in text and "| blocked | 1 |" in text
    assert "| slot utilisation | 52.3 % (target 80.0 %+) |" in text
    assert "| cycle time median / p90 | 1 h 00 min / 1 h 20 min |" in text
    assert "| D | dependency C failed |" in text
    assert "queued > 2 × running: not triggered. On average 2.45 queued vs 2.09 running" in text
    page = daily.html(fig)
    assert page.count('<rect class="bar ') == ALL_ATTEMPTS
    assert '<span class="figure" data-key="success.rate">80.0 %</span>' in page
    assert '<span class="figure" data-key="success.succeeded">4</span> of <span class="figure"' \
           ' data-key="success.decided">5</span>' in page
    assert '<span class="figure" data-key="utilisation.average">52.3 %</span>' in page
    assert "target 80.0 %" in page and "<script" not in page and "http" not in page
    assert json.loads(json.dumps(fig)) == fig  # JSON-serialisable as it is


def test_a_past_day_is_replayed_from_the_events(good):
    """The same store, asked about 09:00-09:35 only: the state then, not now."""
    store, _fig, _run = good
    fig = daily.figures(store, "demo", DAY_START, at("09:35"), now=at("10:50"), tz=UTC, day=DAY)
    assert fig["complete"] is True
    assert fig["states"] == {"queued": 3, "running": 2, "merged": 2, "failed": 1, "blocked": 1}  # F G H; B E
    assert (fig["success"]["succeeded"], fig["success"]["decided"]) == (1, 2)        # A merged, C failed
    assert [m["task_id"] for m in fig["merges"]["in_review"]] == ["Y", "A"]          # A not promoted yet
    assert [(a["task_id"], a["category"], a["shown_end"]) for a in fig["gantt"]["attempts"]
            if a["shown_end"] == at("09:35")] == [("B", "running", at("09:35")), ("E", "running", at("09:35"))]


def test_lanes_are_assigned_greedily_when_attempts_have_no_slot(good):
    store, _fig, _run = good
    with store.transaction() as db:
        db.execute("UPDATE attempts SET slot = NULL WHERE node = 'n1'")
    fig = daily.figures(store, "demo", DAY_START, DAY_END, now=at("10:50"), tz=UTC)
    assert fig["gantt"]["inferred_nodes"] == ["n1"]
    lanes = {(a["task_id"], a["number"]): a["lane"] for a in fig["gantt"]["attempts"] if a["node"] == "n1"}
    assert lanes == {("A", 1): 0, ("B", 1): 1, ("C", 1): 1, ("E", 1): 0, ("E", 2): 0, ("F", 2): 1}
    assert "n1 · lane 0" in [x["label"] for x in fig["gantt"]["lanes"]]
    assert "assigned greedily" in daily.markdown(fig) and "assigned greedily" in daily.html(fig)


def test_killed_attempts_are_not_failures_and_lost_ones_are(good):
    store, _fig, run = good
    run.at(at("11:00")).book.finish(run.grants.pop("F"), False, "stop.yml -e cancel=true", cancelled=True)
    run.start("G", N3)
    run.at(at("11:10")).book.close_run("failed")      # the run ends while G runs: its attempt is abandoned
    fig = daily.figures(store, "demo", DAY_START, DAY_END, now=at("11:30"), tz=UTC)
    categories = {(a["task_id"], a["number"]): a["category"] for a in fig["gantt"]["attempts"]}
    assert (categories[("F", 2)], categories[("G", 1)]) == ("killed", "lost")
    assert fig["failures"]["by_category"] == {"failed": 3, "infra": 1, "lost": 1}
    lost = next(i for i in fig["failures"]["items"] if i["category"] == "lost")
    assert (lost["task_id"], lost["node"]) == ("G", "n3") and lost["reason"].startswith("run ")
    assert fig["states"]["queued"] == 2                         # F and G back in the queue
    assert fig["utilisation"]["busy_slot_s"] == (230 + 10 + 10) * MIN


HOSTILE = '<script>alert("x")</script> & <img src=x onerror=alert(1)>'


def bad_day(projects: ProjectFactory, store: Store, clock: Clock, artifacts: Path) -> History:
    """One node with one slot; P1 fails (hostile reason and executor), P2 conflicts three times, 4 specs wait."""
    clock.t = at("08:00")
    feed(projects, store, **{
        "P1.md": spec_text("P1", modifies=["src/p1.py"], retries=0),
        "P2.md": spec_text("P2", modifies=["src/p2.py"], retries=2),
        "Q.md": spec_text("Q", modifies=["src/q.py"], depends_on=["P1"]),
        **{f"P{i}.md": spec_text(f"P{i}", modifies=[f"src/p{i}.py"]) for i in range(3, 7)},
    })
    m1 = NodeInfo("m1", 1)
    run = History(store, clock, artifacts)
    run.nodes(m1)
    run.at(at("09:00")).start("P1", m1)
    run.at(at("09:30")).end("P1", ok=False, reason=HOSTILE + "\nsecond line", executor="<i>evil</i>")
    run.start("P2", m1)
    run.at(at("10:00")).end("P2")
    for verified, conflict, finish in (("10:02", "10:05", "10:15"), ("10:17", "10:20", "10:30")):
        run.at(at(verified)).verify("P2")
        assert run.at(at(conflict)).conflict("P2", ["src/<svg onload=alert(1)>.py"]) == "queued"
        run.start("P2", m1)   # at once, on the slot it had
        run.at(at(finish)).end("P2")
    run.at(at("10:32")).verify("P2")
    assert run.at(at("10:35")).conflict("P2", ["src/p2.py"]) == "failed"
    run.at(at("12:00"))
    return run


@pytest.fixture
def bad(projects, tmp_path, clock):
    with Store(tmp_path / "state.db") as store:
        bad_day(projects, store, clock, tmp_path / "artifacts")
        yield store, daily.figures(store, "demo", DAY_START, DAY_END, now=at("12:00"), tz=UTC)


def test_every_scaling_signal_fires_on_a_bad_day(bad):
    _store, fig = bad
    assert (fig["success"]["succeeded"], fig["success"]["failed"], fig["success"]["rate"]) == (0, 2, 0.0)
    assert fig["utilisation"]["average"] == pytest.approx(80 / 90) and fig["utilisation"]["meets_target"] is True
    # queued minutes in 09:00-10:30: P2 30 + Q 30 + P3..P6 4 x 90 = 420; running 80
    assert fig["queue"]["avg_queued"] == pytest.approx(420 / 90)
    assert fig["queue"]["avg_running"] == pytest.approx(80 / 90)
    assert fig["conflicts"] == {"count": 3, "specs": ["P2"], "merge_tries": 3, "share": 1.0}
    signals = {s["key"]: s for s in fig["signals"]}
    assert {k: s["triggered"] for k, s in signals.items()} == {"add_nodes": True, "spec_quality": True,
                                                               "work_split": True}
    assert signals["add_nodes"]["advice"] == "add nodes: specs waited for slots"
    assert signals["spec_quality"]["measure"] == "2 of 2 decided specs failed (100.0 %)"
    assert daily.headline(fig)["signals"] == ["add_nodes", "spec_quality", "work_split"]
    assert fig["failures"]["by_stage"] == {"merge": 3, "node": 1}
    assert fig["blocked"] == [{"task_id": "Q", "reason": "dependency P1 failed"}]
    text = daily.markdown(fig)
    assert text.count("**TRIGGERED**") == 3


def test_untrusted_strings_are_escaped(bad):
    _store, fig = bad
    page = daily.html(fig)

    class Tags(HTMLParser):
        def __init__(self):
            super().__init__()
            self.tags, self.attributes = set(), set()

        def handle_starttag(self, tag, attrs):
            self.tags.add(tag)
            self.attributes |= {name for name, _value in attrs}

    parser = Tags()
    parser.feed(page)
    assert not parser.tags & {"script", "img", "i"}
    assert not {a for a in parser.attributes if a.startswith("on")}
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;img src=x onerror=alert(1)&gt;" in page
    assert "&lt;i&gt;evil&lt;/i&gt;" in page and "src/&lt;svg onload=alert(1)&gt;.py" in page
    text = daily.markdown(fig)
    assert "<script>" not in text and "<img" not in text and "<i>" not in text and "<svg" not in text
    assert "&lt;script&gt;" in text


def test_a_quiet_day_has_no_charts_and_no_signals(good):
    store, _fig, run = good
    run.at(at("11:00")).end("F")
    _, start, end = daily.day_bounds("2024-05-20", UTC)
    fig = daily.figures(store, "demo", start, end, now=end + 3600, tz=UTC)
    assert fig["gantt"]["attempts"] == [] and fig["utilisation"]["average"] is None
    assert fig["success"]["rate"] is None and [s["triggered"] for s in fig["signals"]] == [None, None, False]
    assert fig["states"] == {"queued": 1, "completed": 2, "merged": 4, "failed": 1, "blocked": 1}
    assert [m["task_id"] for m in fig["merges"]["in_review"]] == ["Y", "B", "E"]
    page = daily.html(fig)
    assert "No attempt ran this day." in page and '<rect class="bar' not in page
    assert "| success rate | n/a (0 of 0; 0 specs attempted, none decided) |" in daily.markdown(fig)


def test_day_bounds_are_local_midnights_and_bad_input_is_refused():
    assert daily.day_bounds("2024-05-14", UTC)[1:] == (datetime(2024, 5, 14, tzinfo=UTC).timestamp(),
                                                       datetime(2024, 5, 15, tzinfo=UTC).timestamp())
    berlin = pytest.importorskip("zoneinfo").ZoneInfo("Europe/Berlin")
    day, start, end = daily.day_bounds("2024-03-31", berlin)     # clocks go forward: a 23-hour day
    assert day == "2024-03-31" and end - start == 23 * 3600
    assert daily.day_bounds(None, UTC, now=at("23:59"))[0] == DAY
    for bad_day_text in ("14.05.2024", "2024-02-30", "2024-05-14; rm -rf /", ""):
        with pytest.raises(daily.ReportError):
            daily.day_bounds(bad_day_text, UTC)
    assert timedelta(seconds=end - start) == timedelta(hours=23)


def test_an_unknown_project_is_refused(tmp_path):
    with Store(tmp_path / "state.db") as store:
        with pytest.raises(daily.ReportError, match="no project 'nope'"):
            daily.figures(store, "nope", DAY_START, DAY_END)
    assert isinstance(daily.ReportError("x"), store_module.StoreError)
    assert sqlite3.connect(tmp_path / "state.db").execute("SELECT count(*) FROM attempts").fetchone() == (0,)


# -- tokens and cost ---------------------------------------------------------------------------

def usage_of(entries: list[dict], key: str) -> dict:
    return {e[key]: (e["attempts"], e["input_tokens"], e["output_tokens"], e["cost_usd"], e["cost_unknown"])
            for e in entries}


@pytest.mark.parametrize("key, expected", [
    ("executor", {"codex": (1, 8_000, 1_000, None, 1), "glm": (2, 40_000, 8_000, 0.04, 0),
                  "minimax": (1, 20_000, 4_000, 0.012, 0)}),
    ("node", {"n1": (2, 28_000, 5_000, 0.012, 1), "n2": (2, 40_000, 8_000, 0.04, 0)}),
], ids=["executor", "node"])
def test_tokens_and_cost_of_the_day_per_executor_and_node(good, key, expected):
    _store, fig, _run = good
    usage = fig["usage"]
    assert usage["total"] == {"attempts": 4, "input_tokens": 68_000, "output_tokens": 13_000, "cost_usd": 0.052,
                              "cost_unknown": 1}                   # Y ran yesterday: not counted
    assert usage_of(usage[f"by_{key}"], key) == expected


WINDOWS = {
    "the day": (DAY_START, DAY_END, at("10:50")),
    "09:00-09:35": (DAY_START, at("09:35"), at("10:50")),     # A, C and B#2 had started
    "a quiet day": (DAY_START + 6 * 86400, DAY_END + 6 * 86400, DAY_END + 7 * 86400),
    "yesterday": (DAY_START - 86400, DAY_START, at("10:50")),   # Y only
}


@pytest.mark.parametrize("window", list(WINDOWS))
@pytest.mark.parametrize("key", ["executor", "node", "project"])
def test_the_report_s_tokens_and_cost_are_store_usage_s(good, window, key):
    store, _fig, _run = good
    start, end, now = WINDOWS[window]
    usage = daily.figures(store, "demo", start, end, now=now, tz=UTC, day=DAY)["usage"]
    entries = usage[f"by_{key}"] if key != "project" else [dict(usage["total"], project="demo")] \
        if usage["total"]["attempts"] else []
    assert [{k: v for k, v in e.items() if k != "cost_unknown"} for e in entries] == \
        store.usage("demo", since=start, until=end, by=key)


def test_markdown_and_html_show_tokens_and_cost_with_unknown_costs_as_unknown(good):
    _store, fig, _run = good
    text = daily.markdown(fig)
    assert "| tokens in / out | 68,000 / 13,000 |" in text and "| cost | $0.0520 (+1 unknown) |" in text
    section = text[text.index("## Tokens and cost"):]
    assert "Day total: 4 collected attempts, 68,000 tokens in, 13,000 tokens out, cost $0.0520 (+1 unknown)." in section
    for row in ("| codex | 1 | 8,000 | 1,000 | unknown |", "| glm | 2 | 40,000 | 8,000 | $0.0400 |",
                "| minimax | 1 | 20,000 | 4,000 | $0.0120 |", "| n1 | 2 | 28,000 | 5,000 | $0.0120 (+1 unknown) |",
                "| n2 | 2 | 40,000 | 8,000 | $0.0400 |"):
        assert row in section, row
    assert section.count("| total | 4 | 68,000 | 13,000 | $0.0520 (+1 unknown) |") == 2
    # The attempt table: a collected attempt's own figures; "-" before collection; an unknown cost says so.
    assert "| A | 1 | n1 | 0 | 09:00 | 09:20 | succeeded | minimax | 20,000 | 4,000 | $0.0120 |" in text
    assert "| C | 1 | n1 | 1 | 09:10 | 09:30 | failed | codex | 8,000 | 1,000 | unknown |" in text
    assert "| E | 2 | n1 | 0 | 10:00 | 10:30 | succeeded | glm | - | - | - |" in text
    page = daily.html(fig)
    assert '<span class="figure" data-key="usage.total.cost">$0.0520 (+1 unknown)</span>' in page
    assert '<span class="figure" data-key="usage.cost">$0.0520 (+1 unknown)</span>' in page
    assert '<span class="figure" data-key="usage.total.input_tokens">68,000</span>' in page
    executors = page[page.index('data-table="usage.executor"'):]
    executors = executors[:executors.index("</table>")]
    assert "<td>codex</td><td class=num>1</td><td>8,000</td><td>1,000</td><td>unknown</td>" in executors
    assert "$0.0000" not in page and "$0.0000" not in text
    assert "C attempt 1 on n1: 09:10–09:30, failed, codex (the agent (codex) exited with 1); tokens 8,000 in / " \
           "1,000 out, cost unknown" in page
    assert daily.summary_line(fig).endswith("tokens 68,000 in / 13,000 out, cost $0.0520 (+1 unknown)")


def test_a_day_with_no_usage_says_so_without_a_zero_cost(good):
    store, _fig, run = good
    run.at(at("11:00")).end("F")
    _, start, end = daily.day_bounds("2024-05-20", UTC)
    fig = daily.figures(store, "demo", start, end, now=end + 3600, tz=UTC)
    assert fig["usage"]["total"] == {"attempts": 0, "input_tokens": 0, "output_tokens": 0, "cost_usd": None,
                                     "cost_unknown": 0}
    assert fig["usage"]["by_executor"] == [] and fig["usage"]["by_node"] == []
    assert "| cost | - |" in daily.markdown(fig)
    assert '<table data-table="usage.executor">' not in daily.html(fig)
