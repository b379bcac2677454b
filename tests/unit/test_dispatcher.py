"""The Dispatcher the strategy plugin calls: a whole run simulated against a real store."""
from __future__ import annotations

import json
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from specfleet.dispatch.leases import LeaseBook
from specfleet.dispatch.policy import NodeInfo
from specfleet.dispatch.run import Dispatcher
from specfleet.model.ending import Ending
from specfleet.model.states import SpecState
from specfleet.node.paths import paths_overlap
from specfleet.store.core import Store
from tests.conftest import ProjectFactory, spec_text
from tests.unit.test_leases import NODES, feed


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def store_path(tmp_path):
    return tmp_path / "state.db"


def engine(store, task_ids, nodes=NODES, **kwargs):
    kwargs.setdefault("merge", False)  # scheduling alone: a completed dependency is enough
    run = Dispatcher(store, "demo", task_ids, nodes, clock=Clock(), **kwargs)
    run.open()
    return run


def test_a_chain_runs_in_order_and_the_run_ends(projects, store_path):
    with Store(store_path) as store:
        feed(projects, store, **{"A.md": spec_text("A"), "B.md": spec_text("B", depends_on=["A"])})
        run = engine(store, ["A", "B"])
        first = run.step()
        assert [g.task_id for g in first.start] == ["A"] and not first.done
        assert run.step().start == []          # B waits for A
        run.finish("A", Ending.SUCCEEDED)
        second = run.step()                    # a finish forces a pass at once
        assert [g.task_id for g in second.start] == ["B"]
        run.finish("B", Ending.SUCCEEDED)
        assert run.step().done
        run.close("ok")
        assert {r.task_id: r.state for r in store.specs("demo")} == {"A": SpecState.COMPLETED,
                                                                      "B": SpecState.COMPLETED}


def test_a_collected_spec_frees_its_slot_keeps_its_locks_and_its_dependents_wait_for_the_merge(projects, store_path):
    with Store(store_path) as store:
        feed(projects, store, **{"A.md": spec_text("A", modifies=["src/a.py"]),
                                 "B.md": spec_text("B", depends_on=["A"], modifies=["src/b.py"]),
                                 "C.md": spec_text("C", modifies=["src/a.py"])})
        run = engine(store, ["A", "B", "C"], nodes=[NodeInfo("n", 1)], merge=True)
        assert [g.task_id for g in run.step().start] == ["A"]
        run.collected("A")                              # branch back: the slot is free at once
        assert store.spec("demo", "A").state is SpecState.COMPLETED
        assert store.db.execute("SELECT COUNT(*) FROM slot_leases").fetchone()[0] == 0
        step = run.step(force=True)
        assert step.start == [] and not step.done       # B waits for A's merge, C for A's lock
        store.transition("demo", "A", SpecState.VERIFIED)
        store.transition("demo", "A", SpecState.MERGED)
        ended = run.finish("A", Ending.SUCCEEDED)
        assert ended.outcome.state is SpecState.MERGED and not ended.requeued
        assert store.db.execute("SELECT COUNT(*) FROM path_locks WHERE task_id = 'A'").fetchone()[0] == 0
        assert [g.task_id for g in run.step().start] == ["B"]


def test_a_spec_the_merge_stage_sent_back_runs_again_and_an_unlanded_dependency_drops_its_dependents(
        projects, store_path):
    with Store(store_path) as store:
        feed(projects, store, **{"A.md": spec_text("A", retries=2, modifies=["src/a.py"]),
                                 "B.md": spec_text("B", depends_on=["A"], modifies=["src/b.py"])})
        run = engine(store, ["A", "B"], nodes=[NodeInfo("n", 2)], merge=True)
        run.step()
        run.collected("A")
        store.transition("demo", "A", SpecState.VERIFIED)
        store.transition("demo", "A", SpecState.CONFLICT, reason="merge conflict in src/a.py")
        store.transition("demo", "A", SpecState.QUEUED, reason="merge conflict in src/a.py")
        assert run.finish("A", Ending.FAILED, "did not land").requeued
        [again] = run.step().start
        assert (again.task_id, again.attempt) == ("A", 2)
        run.collected("A")
        store.transition("demo", "A", SpecState.VERIFIED)
        store.transition("demo", "A", SpecState.IN_REVIEW)  # waits for a person: nothing in this run merges it
        assert not run.finish("A", Ending.FAILED, "review required").requeued
        step = run.step(force=True)
        assert "dependency A is in_review, not merged" in step.dropped["B"] and step.done


def test_unreachable_quarantines_the_node_and_requeues_without_an_attempt(projects, store_path):
    with Store(store_path) as store:
        feed(projects, store, **{"A.md": spec_text("A")})
        run = engine(store, ["A"], nodes=[NodeInfo("n1", 1), NodeInfo("n2", 1, priority=1)])
        assert run.step().start[0].node == "n1"
        ended = run.finish("A", Ending.UNREACHABLE, "ssh: connection refused")
        assert ended.requeued and ended.quarantined_until is not None
        again = run.step()
        assert [(g.task_id, g.node, g.attempt) for g in again.start] == [("A", "n2", 2)]
        assert store.spec("demo", "A").attempts_used == 0
        health = store.db.execute("SELECT health, health_reason FROM nodes WHERE name = 'n1'").fetchone()
        assert health[0] == "quarantined" and "connection refused" in health[1]


def test_repeated_infrastructure_failures_end_the_spec_for_this_run(projects, store_path):
    with Store(store_path) as store:
        feed(projects, store, **{"A.md": spec_text("A"), "B.md": spec_text("B", depends_on=["A"])})
        nodes = [NodeInfo(f"n{i}", 1) for i in range(5)]
        run = engine(store, ["A", "B"], nodes=nodes, infra_limit=3)
        for number in range(1, 4):
            step = run.step()
            assert [g.attempt for g in step.start] == [number]
            ended = run.finish("A", Ending.INFRASTRUCTURE, "disk full")
        assert not ended.requeued and "3 infrastructure failures" in ended.gave_up
        last = run.step()
        assert last.dropped == {"B": "not started: dependency A is not run in this run"} and last.done
        assert store.spec("demo", "A").state is SpecState.QUEUED  # not the spec's fault: still queued


def test_specs_no_node_can_run_are_dropped_with_the_reason(projects, store_path):
    with Store(store_path) as store:
        feed(projects, store, **{"A.md": spec_text("A", executor="codex"), "B.md": spec_text("B", modifies=["README.md"])})
        run = engine(store, ["A", "B"], nodes=[NodeInfo("n1", 2, labels=frozenset({"glm"})), NodeInfo("off", 4, enabled=False)])
        step = run.step()
        assert [g.task_id for g in step.start] == ["B"]
        assert step.dropped == {"A": "cannot run: no enabled node with slots runs executor codex"}


def test_specs_only_taken_out_nodes_could_run_are_dropped_naming_why(projects, store_path):
    with Store(store_path) as store:
        feed(projects, store, **{"A.md": spec_text("A", executor="codex"), "B.md": spec_text("B", modifies=["README.md"])})
        store.set_node_out("n2", "health", "codex is not installed")
        run = engine(store, ["A", "B"], nodes=[NodeInfo("n1", 2, labels=frozenset({"glm"})),
                                               NodeInfo("n2", 2, labels=frozenset({"codex"}))])
        step = run.step()
        assert [g.task_id for g in step.start] == ["B"]
        assert step.dropped == {"A": "cannot run: no enabled node with slots runs executor codex; "
                                     "taken out: n2 (health: codex is not installed)"}


def test_drain_drops_what_has_not_started_and_cancel_requeues_the_killed(projects, store_path):
    with Store(store_path) as store:
        feed(projects, store, **{f"{t}.md": spec_text(t, modifies=[f"src/{t}.py"]) for t in "ABCD"})
        run = engine(store, list("ABCD"), nodes=[NodeInfo("n", 2)])
        started = [g.task_id for g in run.step().start]
        assert started == ["A", "B"]
        LeaseBook(store).request_stop("demo", "cancel")
        run.clock.now += 1
        step = run.step()
        assert set(step.dropped) == {"C", "D"} and not step.done
        run.finish("A", Ending.FAILED, "killed")
        run.finish("B", Ending.SUCCEEDED)
        assert run.step().done
        run.close("stopped")
        states = {r.task_id: (r.state, r.attempts_used) for r in store.specs("demo")}
        assert states == {"A": (SpecState.QUEUED, 0), "B": (SpecState.COMPLETED, 0), "C": (SpecState.QUEUED, 0),
                          "D": (SpecState.QUEUED, 0)}
        outcome = store.db.execute("SELECT outcome FROM attempts WHERE task_id = 'A'").fetchone()[0]
        assert outcome == "cancelled"


def test_heartbeats_keep_leases_alive_and_silence_lets_another_run_take_over(projects, store_path):
    with Store(store_path) as store:
        feed(projects, store, **{"A.md": spec_text("A")})
        run = engine(store, ["A"], nodes=[NodeInfo("n", 1)], ttl=30.0)
        run.step()
        expiry = store.db.execute("SELECT expires_at FROM slot_leases").fetchone()[0]
        run.clock.now += 11                    # past ttl/3: the next step renews
        run.step()
        assert store.db.execute("SELECT expires_at FROM slot_leases").fetchone()[0] > expiry
        # The run went silent (its owner lives, so only the heartbeat tells).
        store.db.execute("UPDATE slot_leases SET expires_at = 0")
        store.db.execute("UPDATE runs SET heartbeat_at = 0")
        other = Dispatcher(store, "demo", ["A"], [NodeInfo("n", 1)], clock=Clock())
        other.open()
        # The job of attempt 1 may still run on the node: the new run adopts it, no attempt 2.
        [grant] = other.step().start
        assert (grant.attempt, grant.adopted, grant.job_run) == (1, True, run.run_id)
        kinds = [e["kind"] for e in store.events("demo", "A")]
        assert "lease_expired" in kinds and "leftover_recorded" in kinds and "attempt_adopted" in kinds
        late = run.finish("A", Ending.SUCCEEDED)
        assert late.outcome.late and store.spec("demo", "A").state is SpecState.RUNNING


def test_a_branch_collected_after_the_lease_was_taken_over_lands_nothing(projects, store_path):
    with Store(store_path) as store:
        feed(projects, store, **{"A.md": spec_text("A")})
        run = engine(store, ["A"], nodes=[NodeInfo("n", 1)], merge=True)
        run.step()
        store.db.execute("UPDATE slot_leases SET expires_at = 0")
        store.db.execute("UPDATE runs SET heartbeat_at = 0")
        other = Dispatcher(store, "demo", ["A"], [NodeInfo("n", 1)], clock=Clock())
        other.open()
        assert other.step().start
        assert run.collected("A").late and store.spec("demo", "A").state is SpecState.RUNNING
        ended = run.finish("A", Ending.SUCCEEDED)
        assert ended.outcome.late and not ended.requeued and run.step().done
        assert store.spec("demo", "A").state is SpecState.RUNNING  # the other run's, untouched


# -- property: a whole run under random durations and failures --------------------------------

@st.composite
def runs(draw):
    count = draw(st.integers(3, 12))
    specs = {}
    for i in range(count):
        deps = draw(st.lists(st.integers(0, i - 1), max_size=2, unique=True)) if i else []
        paths = draw(st.lists(st.sampled_from(["src/", "src/app.py", "src/util.py", "tests/", "tests/test_app.py",
                                               "README.md", "src/*.py"]), min_size=1, max_size=2,
                              unique=True))
        specs[f"T{i:02d}"] = ([f"T{d:02d}" for d in deps], paths, draw(st.integers(0, 2)), draw(st.integers(0, 1)))
    return specs, draw(st.integers(0, 2**32 - 1))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(scenario=runs())
def test_a_run_never_breaks_slots_locks_or_order_and_always_ends(tmp_path_factory, scenario):
    specs, seed = scenario
    rng = random.Random(seed)
    projects = ProjectFactory(tmp_path_factory.mktemp("p"))
    with Store(projects.root / "state.db") as store:
        feed(projects, store, **{f"{t}.md": spec_text(t, depends_on=d, modifies=m, priority=p, retries=r)
                                 for t, (d, m, p, r) in specs.items()})
        clock = Clock()
        with pytest.MonkeyPatch.context() as patch:
            # Leases, heartbeats and quarantines read the store's one clock: give it simulated time.
            patch.setattr("specfleet.store.base.now", clock)
            step = simulate(store, specs, rng, clock)
        assert step.done, "the run did not end"
        assert store.db.execute("SELECT COUNT(*) FROM slot_leases").fetchone()[0] == 0
        assert all(r.state is not SpecState.RUNNING for r in store.specs("demo"))


def simulate(store, specs, rng, clock):
    run = Dispatcher(store, "demo", list(specs), NODES, clock=clock, infra_limit=2)
    run.open()
    running: dict[str, tuple[str, float]] = {}   # task -> (node, end time)
    try:
        for _ in range(2000):
            # Nothing running: every node may be quarantined, so let minutes pass.
            clock.now += rng.choice([0.1, 0.6, 2.0]) if running else 30.0
            step = run.step()
            for grant in step.start:
                for dep in specs[grant.task_id][0]:
                    assert store.spec("demo", dep).state is SpecState.COMPLETED, (grant.task_id, dep)
                running[grant.task_id] = (grant.node, clock.now + rng.uniform(0.5, 5))
            check(store, running)
            if step.done:
                return step
            for task, (_node, end) in sorted(running.items()):
                if end <= clock.now:
                    del running[task]
                    run.finish(task, rng.choices(list(Ending)[:5], weights=[7, 2, 1, 1, 1])[0], "random")
            # Now and then a preflight reaches a node and finds the jobs left there have ended.
            for left in run.book.leftovers():
                if rng.random() < 0.2:
                    run.book.settle_leftover(left["attempt_id"], "finished")
        return step
    finally:
        run.close("ok")


def check(store, running):
    per_node: dict[str, int] = {}
    for node, _end in running.values():
        per_node[node] = per_node.get(node, 0) + 1
    assert all(per_node[n.name] <= n.slots for n in NODES if n.name in per_node), per_node
    tasks = sorted(running)
    modifies = {t: json.loads(store.db.execute("SELECT modifies_json FROM specs WHERE task_id = ?", (t,)).fetchone()[0])
                for t in tasks}
    for i, first in enumerate(tasks):
        for second in tasks[i + 1:]:
            assert not any(paths_overlap(a, b) for a in modifies[first] for b in modifies[second]), (first, second)
