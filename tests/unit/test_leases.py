from __future__ import annotations

import json
import random
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from specfleet.dispatch.leases import LeaseBook, RunConflict
from specfleet.dispatch.policy import NodeInfo, choose_node, ready_and_doomed
from specfleet.model.states import DEPENDENCY_COMPLETED, RunKind, SpecState
from specfleet.node.paths import paths_overlap
from specfleet.store.core import Store, StoreError
from specfleet.validate.checks import validate_project
from tests.conftest import ProjectFactory, spec_text

NODES = [NodeInfo("n1", 1), NodeInfo("n2", 2), NodeInfo("n4", 4)]


def feed(projects: ProjectFactory, store: Store, name: str = "demo", **specs: str):
    projects.project(name, **specs)
    report = validate_project(projects.specs_root, name, None, "glm", display_root="specs")
    assert report.ok, report.summary()
    store.feed(report)


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "state.db") as opened:
        yield opened


def book(store, ttl=90.0):
    leases = LeaseBook(store, ttl=ttl)
    leases.open_run("demo", exclusive=False)  # several runs of one project share the queue here
    return leases


def test_order_is_priority_then_critical_path_then_id(projects, store):
    feed(projects, store, **{
        "A.md": spec_text("A", priority=2, modifies=["src/a.py"]),
        "B.md": spec_text("B", priority=1, modifies=["src/b.py"]),
        "C.md": spec_text("C", priority=2, estimate="1m", modifies=["src/c.py"]),
        "D.md": spec_text("D", priority=2, estimate="1m", modifies=["src/d.py"], depends_on=["C"]),
        "E.md": spec_text("E", priority=2, modifies=["src/e.py"]),
    })
    result = book(store).grant("demo", [NodeInfo("n", 3)])
    # B first (priority 1); then C (its chain C->D is 2m+... vs A/E 10m each? estimates decide)
    assert [g.task_id for g in result.granted][0] == "B"
    assert {g.task_id for g in result.granted} == {"B", "A", "E"}  # A, E: 10m each > C's 1m + D's 1m
    assert result.waiting["C"].startswith("no free slot")


def test_slots_are_never_shared_and_the_best_node_wins(projects, store):
    feed(projects, store, **{f"S{i}.md": spec_text(f"S{i}", modifies=[f"src/m{i}.py"]) for i in range(9)})
    result = book(store).grant("demo", NODES)
    per_node = {}
    for grant in result.granted:
        per_node.setdefault(grant.node, []).append(grant.slot)
    assert {n: sorted(s) for n, s in per_node.items()} == {"n1": [0], "n2": [0, 1], "n4": [0, 1, 2, 3]}
    assert len(result.waiting) == 2
    assert store.db.execute("SELECT count(*) FROM slot_leases").fetchone()[0] == 7


def test_choose_node_prefers_priority_then_free_slots_and_respects_labels():
    nodes = [NodeInfo("a", 4, priority=1), NodeInfo("b", 2), NodeInfo("c", 8, labels=frozenset({"codex"})),
             NodeInfo("off", 8, enabled=False), NodeInfo("zero", 0)]
    assert choose_node(nodes, {}, "glm").name == "b"
    assert choose_node(nodes, {"b": 2}, "glm").name == "a"
    assert choose_node(nodes, {}, "codex").name == "c"
    assert choose_node(nodes, {"b": 2, "a": 4}, "glm") is None
    assert choose_node(nodes, {}, "glm", unavailable={"b"}).name == "a"


def test_node_vars_are_read_with_clear_errors():
    node = NodeInfo.from_vars("n", {"specfleet_slots": 8, "specfleet_node_priority": 2, "specfleet_enabled": "false",
                                    "specfleet_executor_labels": ["glm", "codex"]})
    assert (node.slots, node.priority, node.enabled, node.labels) == (8, 2, False, frozenset({"glm", "codex"}))
    with pytest.raises(ValueError, match="node n: specfleet_slots is -1"):
        NodeInfo.from_vars("n", {"specfleet_slots": -1})


def test_overlapping_locks_serialise_and_the_waiting_spec_is_not_starved(projects, store):
    feed(projects, store, **{
        "S1.md": spec_text("S1", priority=0, modifies=["src/"]),
        "S2.md": spec_text("S2", priority=1, modifies=["src/app.py"]),
        "S3.md": spec_text("S3", priority=2, modifies=["src/app.py", "tests/"]),
        "S4.md": spec_text("S4", priority=3, modifies=["tests/test_app.py"]),
    })
    leases = book(store)
    first = leases.grant("demo", [NodeInfo("n", 8)])
    assert [g.task_id for g in first.granted] == ["S1"]
    assert first.waiting["S2"] == "lock on src/ held by S1 (demo)"
    # S4 does not touch src/, but S3 (earlier in order, waiting) needs tests/: S4 must not overtake it.
    assert first.waiting["S4"] == "waits behind S3, which needs tests/"
    leases.finish(first.granted[0], succeeded=True)
    second = leases.grant("demo", [NodeInfo("n", 8)])
    assert [g.task_id for g in second.granted] == ["S2"]


def test_a_failure_blocks_descendants_and_infrastructure_failures_use_no_attempt(projects, store):
    feed(projects, store, **{
        "S1.md": spec_text("S1", retries=1, modifies=["src/a.py"]),
        "S2.md": spec_text("S2", depends_on=["S1"], modifies=["src/b.py"]),
        "S3.md": spec_text("S3", depends_on=["S2"], modifies=["src/c.py"]),
    })
    leases = book(store)
    grant = leases.grant("demo", [NodeInfo("n", 2)]).granted[0]
    assert leases.finish(grant, False, "node lost", infrastructure=True).state is SpecState.QUEUED
    assert store.spec("demo", "S1").attempts_used == 0
    grant = leases.grant("demo", [NodeInfo("n", 2)]).granted[0]
    assert leases.finish(grant, False, "tests red").state is SpecState.QUEUED  # retries: 1
    grant = leases.grant("demo", [NodeInfo("n", 2)]).granted[0]
    assert grant.attempt == 3
    outcome = leases.finish(grant, False, "tests red again")
    assert outcome == type(outcome)(SpecState.FAILED, ("S2", "S3"))
    assert store.spec("demo", "S3").reason == "dependency S1 failed"
    assert store.db.execute("SELECT count(*) FROM slot_leases").fetchone()[0] == 0
    kinds = [r[0] for r in store.db.execute("SELECT kind FROM attempts ORDER BY number")]
    assert kinds == ["infra", "spec", "spec"]


def test_leases_of_a_dead_run_expire_and_are_taken_over(projects, store):
    feed(projects, store, **{"S1.md": spec_text("S1"), "S2.md": spec_text("S2", modifies=["src/util.py"])})
    dead = book(store, ttl=-1.0)  # a run whose heartbeat already lapsed
    assert len(dead.grant("demo", [NodeInfo("n", 1)]).granted) == 1
    alive = book(store)
    result = alive.grant("demo", [NodeInfo("n", 1)])
    assert [e["detail"]["owner"] for e in store.events("demo") if e["kind"] == "lease_expired"] == [dead.run_id]
    # The dead run's spec went back to the queue and its job (maybe still running on the
    # node) is adopted: the same attempt, the dead run's directories, no second agent.
    [grant] = result.granted
    assert (grant.task_id, grant.attempt, grant.adopted, grant.job_run) == ("S1", 1, True, dead.run_id)
    assert store.db.execute("SELECT run_id FROM slot_leases").fetchone()[0] == alive.run_id
    attempt = store.db.execute("SELECT outcome, ended_at, adopted_by FROM attempts WHERE task_id = 'S1'").fetchall()
    assert [tuple(a) for a in attempt] == [(None, None, alive.run_id)]
    assert store.db.execute("SELECT COUNT(*) FROM leftovers").fetchone()[0] == 0
    assert store.spec("demo", "S1").attempts_used == 0


def test_a_late_result_after_expiry_changes_nothing(projects, store):
    feed(projects, store, **{"S1.md": spec_text("S1")})
    slow = book(store, ttl=-1.0)
    grant = slow.grant("demo", [NodeInfo("n", 1)]).granted[0]
    taker = book(store)
    assert [g.task_id for g in taker.grant("demo", [NodeInfo("n", 1)]).granted] == ["S1"]
    outcome = slow.finish(grant, succeeded=False, reason="tests red")
    assert outcome.late and outcome.state is SpecState.RUNNING
    assert store.spec("demo", "S1").attempts_used == 0
    assert store.db.execute("SELECT run_id FROM slot_leases").fetchone()[0] == taker.run_id


def test_closing_a_run_requeues_what_it_still_holds(projects, store):
    feed(projects, store, **{"S1.md": spec_text("S1")})
    leases = book(store)
    leases.grant("demo", [NodeInfo("n", 1)])
    leases.close_run("interrupted")
    row = store.spec("demo", "S1")
    assert row.state is SpecState.QUEUED and "ended (interrupted)" in row.reason
    assert store.db.execute("SELECT COUNT(*) FROM slot_leases").fetchone()[0] == 0
    # Its job still runs on the node: a leftover keeps the slot and the locks.
    assert [(r["node"], r["status"]) for r in leases.leftovers()] == [("n", "unknown")]
    assert store.db.execute("SELECT COUNT(*) FROM path_locks").fetchone()[0] == 1


def test_a_second_dispatch_of_the_same_project_is_refused_while_the_first_lives(projects, store):
    feed(projects, store, **{"S1.md": spec_text("S1")})
    first = LeaseBook(store)
    first.open_run("demo")
    with pytest.raises(RunConflict, match=f"project demo is already being dispatched by run {first.run_id}.*stop.yml"):
        LeaseBook(store).open_run("demo")
    LeaseBook(store).open_run("other")  # another project is fine
    first.close_run("ok")
    LeaseBook(store).open_run("demo")


def test_a_run_whose_owner_process_died_is_dead_at_once(projects, store):
    feed(projects, store, **{"S1.md": spec_text("S1")})
    owner = subprocess.Popen(["sleep", "60"])
    crashed = LeaseBook(store)
    crashed.open_run("demo", owner_pid=owner.pid)
    crashed.grant("demo", [NodeInfo("n", 1)])
    with pytest.raises(RunConflict):
        LeaseBook(store).open_run("demo")
    owner.kill()
    owner.wait()
    resumed = LeaseBook(store)
    resumed.open_run("demo")  # well within the ttl: the owner's pid told
    assert store.db.execute("SELECT status FROM runs WHERE id = ?", (crashed.run_id,)).fetchone()[0] == "lost"
    [grant] = resumed.grant("demo", [NodeInfo("n", 1)]).granted
    assert grant.adopted and grant.attempt == 1
    event = [e for e in store.events("demo", "S1") if e["kind"] == "attempt_adopted"][-1]
    assert event["run_id"] == resumed.run_id and event["detail"]["adopted_from"] == crashed.run_id


def test_a_leftover_on_a_quarantined_node_holds_its_slot_while_the_spec_runs_elsewhere(projects, store):
    feed(projects, store, **{"S1.md": spec_text("S1", modifies=["src/app.py"]),
                             "S2.md": spec_text("S2", modifies=["src/app.py"], depends_on=["S1"])})
    nodes = [NodeInfo("a", 1), NodeInfo("b", 1)]
    leases = book(store)
    first = leases.grant("demo", nodes).granted[0]
    leases.quarantine(first.node, "cut off")
    leases.finish(first, False, "node did not answer", infrastructure=True, leftover=True)
    [again] = leases.grant("demo", nodes).granted
    assert again.node != first.node and again.attempt == 2 and not again.adopted
    # Both slots are in use now: the leftover's and the new attempt's.
    assert leases.grant("demo", nodes).granted == []
    # The node answers again and says the old job still runs: its spec moved on, so kill it.
    assert leases.settle_leftover(first.attempt_id, "running") == "kill"
    assert leases.settle_leftover(first.attempt_id, "lost") == "settled"
    assert leases.leftovers() == []
    settled = [e for e in store.events("demo", "S1") if e["kind"] == "leftover_settled"][-1]
    assert settled["detail"]["superseded"] is True
    # The new attempt's locks survived the settling.
    assert {r[0] for r in store.db.execute("SELECT run_id FROM path_locks")} == {leases.run_id}


def test_a_leftover_whose_spec_is_still_queued_is_kept_for_adoption(projects, store):
    feed(projects, store, **{"S1.md": spec_text("S1")})
    leases = book(store)
    grant = leases.grant("demo", [NodeInfo("a", 1)]).granted[0]
    leases.quarantine("a", "cut off")
    leases.finish(grant, False, "node did not answer", infrastructure=True, leftover=True)
    assert leases.grant("demo", [NodeInfo("a", 1)]).granted == []  # only node is out
    assert leases.settle_leftover(grant.attempt_id, "finished") == "keep"
    leases.node_healthy("a", seen=True)
    [harvest] = leases.grant("demo", [NodeInfo("a", 1)]).granted
    assert harvest.adopted and harvest.attempt == 1 and harvest.job_run == leases.run_id


def test_stop_requests_reach_live_runs_and_cancel_wins(projects, store):
    feed(projects, store, **{"S1.md": spec_text("S1")})
    first, ended = book(store), book(store)
    ended.close_run("ok")
    assert [r["id"] for r in first.request_stop("demo", "cancel")] == [first.run_id]
    first.request_stop("demo", "drain")
    assert first.stop_mode() == "cancel" and ended.stop_mode() is None
    with pytest.raises(ValueError, match="drain or cancel"):
        first.request_stop("demo", "pause")


def test_quarantined_nodes_get_nothing_until_readmitted(projects, store):
    feed(projects, store, **{"S1.md": spec_text("S1")})
    leases = book(store)
    leases.sync_nodes([NodeInfo("n", 2)])
    leases.quarantine("n", "unreachable")
    assert leases.grant("demo", [NodeInfo("n", 2)]).granted == []
    leases.node_healthy("n")
    assert len(leases.grant("demo", [NodeInfo("n", 2)]).granted) == 1


def test_a_node_taken_out_stays_out_until_the_check_that_took_it_out_passes(projects, store):
    feed(projects, store, **{"S1.md": spec_text("S1")})
    leases = book(store)
    assert store.set_node_out("n", "health", "3.1 GiB free, below 10 GiB")  # before any dispatch knew the node
    leases.sync_nodes([NodeInfo("n", 2)])  # a dispatch records the inventory's view: the node stays out
    leases.node_healthy("n", seen=True)    # and its preflight answering does not bring it back
    assert leases.grant("demo", [NodeInfo("n", 2)]).granted == []
    assert not store.set_node_out("n", "health", "3.1 GiB free, below 10 GiB")  # same reason: no new event
    assert not store.set_node_out("n", "health", "2.9 GiB free, below 10 GiB")  # new figure, no new event
    assert store.node_status("n")[0]["disabled_reason"] == "2.9 GiB free, below 10 GiB"
    assert store.set_node_out("n", "bootstrap", "bootstrap failed at 'Install the OS packages': no apt")
    assert not store.set_node_out("n", "health", "codex is not installed")  # health does not take it over
    assert not store.set_node_in("n", "health")  # so a health check cannot undo a failed bootstrap
    assert store.node_status("n")[0]["disabled_by"] == "bootstrap"
    assert store.set_node_in("n", "bootstrap", facts={"credentials": ["vault_a"]})
    row = store.node_status("n")[0]
    assert row["disabled_by"] is None and row["facts"] == {"credentials": ["vault_a"]} and row["slots"] == 2
    assert len(leases.grant("demo", [NodeInfo("n", 2)]).granted) == 1
    kinds = [(e["kind"], e["detail"]["by"]) for e in store.events() if e["kind"].startswith("node_")]
    assert kinds == [("node_disabled", "health"), ("node_disabled", "bootstrap"), ("node_enabled", "bootstrap")]


def test_ready_and_doomed():
    S = SpecState
    states = {"a": S.COMPLETED, "b": S.QUEUED, "c": S.QUEUED, "d": S.FAILED, "e": S.QUEUED, "f": S.RUNNING}
    deps = {"b": ["a"], "c": ["f"], "e": ["d"]}
    assert ready_and_doomed(states, deps, DEPENDENCY_COMPLETED) == (["b"], {"e": "dependency d failed"})
    # By default a dependency must be merged: completed is not enough.
    assert ready_and_doomed(states, deps) == ([], {"e": "dependency d failed"})
    assert ready_and_doomed({**states, "a": S.MERGED}, deps) == (["b"], {"e": "dependency d failed"})


# -- property: whatever happens, never over slots, never overlapping locks, never before deps --

@st.composite
def scenarios(draw):
    count = draw(st.integers(3, 14))
    specs = {}
    for i in range(count):
        deps = draw(st.lists(st.integers(0, i - 1), max_size=2, unique=True)) if i else []
        paths = draw(st.lists(st.sampled_from(["src/", "src/app.py", "src/util.py", "tests/", "tests/test_app.py",
                                               "README.md", "src/*.py", "tests/test_new.py"]), min_size=1, max_size=2,
                              unique=True))
        specs[f"T{i:02d}"] = ([f"T{d:02d}" for d in deps], paths, draw(st.integers(0, 2)))
    return specs, draw(st.integers(0, 2**32 - 1))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(scenario=scenarios())
def test_invariants_hold_under_random_runs(tmp_path_factory, scenario):
    specs, seed = scenario
    projects = ProjectFactory(tmp_path_factory.mktemp("p"))
    rng = random.Random(seed)
    with Store(projects.root / "state.db") as store:
        feed(projects, store, **{f"{t}.md": spec_text(t, depends_on=d, modifies=m, retries=1, priority=p)
                                 for t, (d, m, p) in specs.items()})
        runs = [book(store), book(store)]  # two concurrent dispatch runs on one store
        running = []
        for _step in range(200):
            leases = rng.choice(runs)
            running += [(leases, g) for g in leases.grant("demo", NODES, limit=rng.randint(1, 4),
                                                          done=DEPENDENCY_COMPLETED).granted]
            check_invariants(store, running)
            if not running:
                break
            for item in rng.sample(running, rng.randint(1, len(running))):
                running.remove(item)
                owner, grant = item
                owner.finish(grant, rng.random() < 0.8, "random failure", infrastructure=rng.random() < 0.1)
        states = {r.task_id: r.state for r in store.specs("demo")}
        assert all(s in (SpecState.COMPLETED, SpecState.FAILED, SpecState.BLOCKED) for s in states.values()), states


def check_invariants(store, running):
    per_node: dict[str, int] = {}
    for _owner, grant in running:
        per_node[grant.node] = per_node.get(grant.node, 0) + 1
    limits = {n.name: n.slots for n in NODES}
    assert all(count <= limits[node] for node, count in per_node.items()), per_node
    for i, (_a, first) in enumerate(running):
        for _b, second in running[i + 1:]:
            mine, theirs = modifies(store, first.task_id), modifies(store, second.task_id)
            assert not any(paths_overlap(x, y) for x in mine for y in theirs), (first.task_id, second.task_id)
    done = {SpecState.COMPLETED}
    for _owner, grant in running:
        for dep in json.loads(store.db.execute("SELECT depends_on_json FROM specs WHERE task_id = ?",
                                               (grant.task_id,)).fetchone()[0]):
            assert store.spec("demo", dep).state in done, (grant.task_id, dep)


def modifies(store, task_id):
    return json.loads(store.db.execute("SELECT modifies_json FROM specs WHERE task_id = ?", (task_id,)).fetchone()[0])


def test_rescue_requeues_failed_and_blocked_specs_with_fresh_attempts_and_never_completed_work(projects, store):
    feed(projects, store, **{"S1.md": spec_text("S1", retries=0), "S2.md": spec_text("S2", depends_on=["S1"],
                                                                                     modifies=["src/util.py"]),
                             "S3.md": spec_text("S3", modifies=["README.md"])})
    leases = book(store)
    granted = {g.task_id: g for g in leases.grant("demo", [NodeInfo("n", 4)]).granted}
    assert leases.finish(granted["S1"], False, "tests red").blocked == ("S2",)
    leases.finish(granted["S3"], True)
    with pytest.raises(StoreError, match="has no spec NOPE"):
        store.rescue("demo", ["NOPE"])
    rescued = store.rescue("demo", ["S1", "S3"])
    assert rescued == {"requeued": ["S1", "S2"], "skipped": {"S3": "completed"}}
    assert {r.task_id: (r.state.value, r.attempts_used) for r in store.specs("demo")} == {
        "S1": ("queued", 0), "S2": ("queued", 0), "S3": ("completed", 0)}
    assert store.rescue("demo") == {"requeued": [], "skipped": {}}




def test_the_run_kind_the_feed_decided_is_recorded_with_the_run(store):
    jobs = LeaseBook(store)
    jobs.open_run("demo", work=RunKind.JOBS)
    unrecorded = LeaseBook(store)
    unrecorded.open_run("other")
    assert store.run_kind(jobs.run_id) is RunKind.JOBS
    assert store.run_kind(unrecorded.run_id) is None and store.run_kind(None) is None
