"""Regression (found by the controller-kill test): the grant pass deadlocked on a leftover.

S2 came first in order, waited for the lock a leftover S1 (the job of a killed run, still
alive on its node) held, and reserved its paths; S1 then waited behind S2's reservation
until its own lock expired (~210 s). Leftovers to adopt now go first and are not held back
by reservations (``specfleet.dispatch.scheduler``)."""
from __future__ import annotations

from specfleet.dispatch.policy import NodeInfo
from tests.conftest import spec_text
from tests.unit.test_leases import book, feed, store  # noqa: F401 (a fixture)


def test_a_leftover_is_adopted_although_a_spec_waiting_for_its_lock_comes_first(projects, store):  # noqa: F811
    feed(projects, store, **{
        "S1.md": spec_text("S1", priority=3, modifies=["src/app.py"]),
        "S2.md": spec_text("S2", priority=0, modifies=["src/"]),
    })
    killed = book(store)
    assert [g.task_id for g in killed.grant("demo", [NodeInfo("n", 2)], only={"S1"}).granted] == ["S1"]
    killed.close_run("interrupted")  # S1's job lives on: a leftover holding src/app.py
    result = book(store).grant("demo", [NodeInfo("n", 2)])
    assert [(g.task_id, g.adopted) for g in result.granted] == [("S1", True)]
    assert result.waiting["S2"] == "lock on src/app.py held by S1 (demo)"
