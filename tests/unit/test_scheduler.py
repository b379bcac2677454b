"""The grant pass's decision as a table: a snapshot of the fleet in, grants and reasons to wait out.

Each case is one rule of :mod:`specfleet.dispatch.scheduler` (its docstring lists them in
order). Notation, to keep the table readable:

* ``ready``: ``"A"`` or ``"A:src/a.py,src/b.py"`` or ``"A:src/a.py@codex"`` (task id,
  modifies, executor), in start order; every spec is in project ``demo``.
* ``nodes``: ``"n1/2"`` (name/slots), ``"n1/2/p1"`` (priority 1), ``"n1/2:codex"`` (labels).
* ``locks``: ``"src/a.py=Z"`` (path held by spec Z of ``demo``).
* ``leftovers``: ``"B@n1/0"`` (B's attempt on node n1, slot 0, job may still run),
  ``"B@n1/0 finished"`` or ``"B@n1/0 expired"`` (its job cannot be using the slot).
* ``grants``: ``"A n1/0"``, ``"+"`` appended when the grant adopts a leftover.
"""
from __future__ import annotations

import pytest

from specfleet.dispatch.policy import NodeInfo, may_run
from specfleet.dispatch.scheduler import Leftover, ReadySpec, Snapshot, schedule

NOW = 1000.0


def _ready(text: str) -> ReadySpec:
    task_id, _, rest = text.partition(":")
    paths, _, executor = rest.partition("@")
    return ReadySpec(task_id, "demo", tuple(p for p in paths.split(",") if p), executor or None)


def _node(text: str) -> NodeInfo:
    spec, _, labels = text.partition(":")
    name, slots, *priority = spec.split("/")
    return NodeInfo(name, int(slots), int(priority[0][1:]) if priority else 0,
                    frozenset(x for x in labels.split(",") if x))


def _leftover(number: int, text: str) -> tuple[str, Leftover]:
    where, _, how = text.partition(" ")
    task_id, place = where.split("@")
    node, slot = place.split("/")
    status = "finished" if how == "finished" else "unknown"
    until = NOW - 1 if how == "expired" else NOW + 600
    return task_id, Leftover(number, node, int(slot), status, until, f"old-run-{number}")


def snapshot(ready=(), nodes=("n1/1",), unavailable=(), occupied=(), locks=(), leftovers=(), limit=None) -> Snapshot:
    by_task: dict[str, list[Leftover]] = {}
    for number, text in enumerate(leftovers, start=1):
        task_id, left = _leftover(number, text)
        by_task.setdefault(task_id, []).append(left)
    held = [(path, owner, "demo") for path, owner in (x.split("=") for x in locks)]
    return Snapshot(ready=[_ready(r) for r in ready], nodes=[_node(n) for n in nodes],
                    unavailable=frozenset(unavailable), occupied=[(n, int(s)) for n, s in (o.split("/") for o in occupied)],
                    locks=held, leftovers=by_task, now=NOW, limit=limit)


CASES = [
    # -- starting: which node, which slot --------------------------------------------------------------
    dict(id="one spec, one free slot",
         ready=["A"], nodes=["n1/1"],
         grants=["A n1/0"], waiting={}),
    dict(id="most free slots wins, then the name breaks the tie",
         ready=["A", "B", "C"], nodes=["n1/1", "n2/2"],
         grants=["A n2/0", "B n1/0", "C n2/1"], waiting={}),
    dict(id="a lower priority number wins over more free slots",
         ready=["A"], nodes=["n1/1/p0", "n2/4/p1"],
         grants=["A n1/0"], waiting={}),
    dict(id="the lowest free slot of the node",
         ready=["A"], nodes=["n1/3"], occupied=["n1/0", "n1/2"],
         grants=["A n1/1"], waiting={}),
    dict(id="labels: a node runs only its executors; a node without labels runs any",
         ready=["A:@codex", "B:@claude"], nodes=["n1/1:claude", "n2/1"],
         grants=["A n2/0", "B n1/0"], waiting={}),
    dict(id="every slot busy",
         ready=["A", "B"], nodes=["n1/1"],
         grants=["A n1/0"], waiting={"B": "no free slot on a healthy node that runs None (1 busy)"}),
    dict(id="every capable node is out",
         ready=["A:@codex"], nodes=["n1/1:codex", "n2/1:claude"], unavailable=["n1"],
         grants=[], waiting={"A": "every node that runs codex is quarantined or taken out (n1)"}),
    dict(id="a node with no slots is no node",
         ready=["A"], nodes=["n1/0"],
         grants=[], waiting={"A": "no free slot on a healthy node that runs None"}),
    dict(id="the pass limit: the rest waits",
         ready=["A", "B"], nodes=["n1/2"], limit=1,
         grants=["A n1/0"], waiting={"B": "pass limit reached"}),
    # -- path locks ------------------------------------------------------------------------------------
    dict(id="a lock held by another spec",
         ready=["A:src/a.py"], locks=["src/a.py=Z"],
         grants=[], waiting={"A": "lock on src/a.py held by Z (demo)"}),
    dict(id="a directory lock covers the files in it",
         ready=["A:src/a.py"], locks=["src/=Z"],
         grants=[], waiting={"A": "lock on src/ held by Z (demo)"}),
    dict(id="a spec's own lock (kept from an earlier attempt) is no conflict",
         ready=["A:src/a.py"], locks=["src/a.py=A"],
         grants=["A n1/0"], waiting={}),
    dict(id="a lock granted earlier in the pass",
         ready=["A:src/x.py", "B:src/x.py"], nodes=["n1/2"],
         grants=["A n1/0"], waiting={"B": "lock on src/x.py held by A (demo)"}),
    dict(id="starvation: a waiting spec reserves its paths against later specs",
         ready=["A:src/a.py,src/b.py", "B:src/b.py"], nodes=["n1/2"], locks=["src/a.py=Z"],
         grants=[], waiting={"A": "lock on src/a.py held by Z (demo)", "B": "waits behind A, which needs src/b.py"}),
    dict(id="a spec waiting for a slot, not a lock, reserves nothing",
         ready=["A:src/a.py@codex", "B:src/a.py@claude"], nodes=["n1/1:codex", "n2/1:claude"], occupied=["n1/0"],
         grants=["B n2/0"], waiting={"A": "no free slot on a healthy node that runs codex (1 busy)"}),
    # -- leftovers -------------------------------------------------------------------------------------
    dict(id="a leftover whose job may still run keeps its slot",
         ready=["A", "B"], nodes=["n1/1"], occupied=["n1/0"], leftovers=["B@n1/0"],
         grants=["B n1/0 +"], waiting={"A": "no free slot on a healthy node that runs None (1 busy)"}),
    dict(id="a leftover to adopt goes first: the slot to harvest it in is not taken by a new start",
         ready=["A", "B"], nodes=["n1/1"], leftovers=["B@n1/0 finished"],
         grants=["B n1/0 +"], waiting={"A": "no free slot on a healthy node that runs None (1 busy)"}),
    dict(id="a leftover is not held back by a reservation on its own locks",
         ready=["A:src/x.py,src/y.py", "B:src/y.py"], nodes=["n1/1", "n2/1"], occupied=["n1/0", "n2/0"],
         locks=["src/x.py=Z", "src/y.py=B"], leftovers=["A@n1/0", "B@n2/0"],
         grants=["B n2/0 +"], waiting={"A": "lock on src/x.py held by Z (demo)"}),
    dict(id="a leftover on a node that is out is not adopted: the spec starts afresh elsewhere",
         ready=["A"], nodes=["n1/1", "n2/1"], unavailable=["n1"], occupied=["n1/0"], leftovers=["A@n1/0"],
         grants=["A n2/0"], waiting={}),
    dict(id="a finished leftover needs a free slot on its node to be harvested",
         ready=["A"], nodes=["n1/1", "n2/1"], occupied=["n1/0"], leftovers=["A@n1/0 finished"],
         grants=[], waiting={"A": "waits for a slot on n1 to harvest its attempt there"}),
    dict(id="a leftover past its timeout is harvested in the node's lowest free slot",
         ready=["A"], nodes=["n1/2"], occupied=["n1/1"], leftovers=["A@n1/1 expired"],
         grants=["A n1/0 +"], waiting={}),
    dict(id="the newest leftover of a spec is the one adopted",
         ready=["A"], nodes=["n1/1", "n2/1"], occupied=["n1/0", "n2/0"], leftovers=["A@n2/0", "A@n1/0"],
         grants=["A n2/0 +"], waiting={}),
]


def _grant_text(placement) -> str:
    return f"{placement.task_id} {placement.node}/{placement.slot}" + (" +" if placement.leftover else "")


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_schedule(case):
    case = dict(case)
    case.pop("id")
    grants, waiting = case.pop("grants"), case.pop("waiting")
    plan = schedule(snapshot(**case))
    assert [_grant_text(p) for p in plan.grants] == grants
    assert plan.waiting == waiting


def test_an_adopted_leftover_is_the_newest_attempt_with_its_original_run():
    plan = schedule(snapshot(ready=["A"], occupied=["n1/0"], leftovers=["A@n1/0"]))
    assert plan.grants[0].leftover.attempt_id == 1 and plan.grants[0].leftover.job_run == "old-run-1"


def test_a_node_recorded_in_the_store_reads_back_as_the_same_node(tmp_path):
    from specfleet.store.core import Store

    nodes = [NodeInfo("n1", 2, 1, frozenset({"codex", "glm"})), NodeInfo("n2", 0, enabled=False)]
    with Store(tmp_path / "state.db") as store:
        store.record_inventory(nodes, NOW)
        assert sorted((NodeInfo.from_row(r) for r in store.node_inventory()), key=lambda n: n.name) == nodes


@pytest.mark.parametrize(("node", "executor", "unavailable", "eligible"), [
    ("n1/1",        None,    (),     True),
    ("n1/1",        "codex", (),     True),    # no labels: any executor
    ("n1/1:codex",  "codex", (),     True),
    ("n1/1:claude", "codex", (),     False),   # labels name the executors it runs
    ("n1/1:claude", None,    (),     True),    # a spec naming no executor runs anywhere
    ("n1/0",        None,    (),     False),   # no slots
    ("n1/1",        None,    ("n1",), False),  # quarantined or taken out
])
def test_which_node_may_run_a_spec(node, executor, unavailable, eligible):
    assert may_run(_node(node), executor, unavailable) is eligible


def test_a_node_disabled_in_the_inventory_may_run_nothing():
    assert may_run(NodeInfo("n1", 4, enabled=False), None) is False
