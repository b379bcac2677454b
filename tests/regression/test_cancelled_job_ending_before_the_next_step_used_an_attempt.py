"""Regression: stop.yml -e cancel=true records the stop, then kills the run's jobs. A killed job
whose end reached the dispatcher before its next scheduling step (the only place it read the
stop request) was taken for a spec failure: it used one of the spec's attempts, and under load
test_dispatch's cancel test saw attempts_used 1. The dispatcher now reads the stop request when
a job fails."""
from __future__ import annotations

from specfleet.dispatch.leases import LeaseBook
from specfleet.dispatch.policy import NodeInfo
from specfleet.model.ending import Ending
from specfleet.model.states import SpecState
from specfleet.store.core import Store
from tests.conftest import spec_text
from tests.unit.test_dispatcher import engine, feed, store_path  # noqa: F401 (a fixture)


def test_a_job_killed_by_cancel_is_cancelled_even_if_it_ends_before_the_next_step(projects, store_path):  # noqa: F811 (the fixture)
    with Store(store_path) as store:
        feed(projects, store, **{f"{t}.md": spec_text(t, modifies=[f"src/{t}.py"]) for t in "AB"})
        run = engine(store, list("AB"), nodes=[NodeInfo("n", 2)])
        assert [g.task_id for g in run.step().start] == ["A", "B"]
        LeaseBook(store).request_stop("demo", "cancel")       # stop.yml, then its kill: no step in between
        run.finish("A", Ending.FAILED, "the job exited with 143")
        run.finish("B", Ending.FAILED, "the job exited with 143")
        states = {r.task_id: (r.state, r.attempts_used) for r in store.specs("demo")}
        assert states == {"A": (SpecState.QUEUED, 0), "B": (SpecState.QUEUED, 0)}
        assert {r[0] for r in store.db.execute("SELECT outcome FROM attempts")} == {"cancelled"}
