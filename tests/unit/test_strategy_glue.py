"""The strategy's glue without a strategy: what a step's result says, and one scheduling step."""
from __future__ import annotations

import pytest

from ansible_specfleet.results import BRANCH_COLLECTED, JOB_STARTED, JOB_WAITED, StepReport
from ansible_specfleet.strategy import run_step
from specfleet.dispatch.run import Step
from specfleet.model.ending import Ending

# result data -> what the strategy learns from it
RESULTS = [
    ({"changed": True, JOB_STARTED: "/w/runs/p/S01/1-r"}, StepReport(started="/w/runs/p/S01/1-r")),
    ({"skipped": True, JOB_STARTED: "/w/runs/p/S01/1-r"}, StepReport()),
    ({"failed": True, JOB_STARTED: "/w/r", "msg": "boom"}, StepReport(failure="boom", ending=Ending.FAILED)),
    ({JOB_WAITED: "/w/r", "rc": 0}, StepReport(waited=True)),
    ({JOB_WAITED: "/w/r", **Ending.STALLED.result(msg="heartbeat stopped\nmore")},
     StepReport(waited=True, failure="heartbeat stopped", ending=Ending.STALLED)),
    ({JOB_WAITED: "/w/r", **Ending.JOB_ENDED.result(msg="the job died")},
     StepReport(waited=True, failure="the job died", ending=Ending.JOB_ENDED)),
    ({JOB_WAITED: "/w/r", "unreachable": True, "msg": "ssh: gone"},
     StepReport(waited=True, failure="ssh: gone", ending=Ending.UNREACHABLE)),
    ({"failed": True, "timedout": {"period": 900}, "msg": "timed out"},
     StepReport(failure="timed out", ending=Ending.INFRASTRUCTURE)),
    ({BRANCH_COLLECTED: "S01", "changed": True}, StepReport(collected=True)),
    ({BRANCH_COLLECTED: "S01", "failed": True, "msg": "x"}, StepReport(failure="x", ending=Ending.FAILED)),
    ({"failed": True}, StepReport(failure="failed", ending=Ending.FAILED)),
]


@pytest.mark.parametrize(("data", "report"), RESULTS)
def test_a_step_result_says_what_happened_to_its_spec(data, report):
    assert StepReport.of(data) == report


class Dispatcher:
    """Steps given in advance; records whether each was forced."""

    poll = 0.5

    def __init__(self, steps):
        self.steps = list(steps)
        self.forced = []

    def step(self, force=False):
        self.forced.append(force)
        return self.steps.pop(0)


class Hooks:
    def __init__(self, busy):
        self.busy = list(busy)  # what settle() answers, call by call
        self.calls = []

    def drop(self, dropped):
        if dropped:
            self.calls.append(("drop", sorted(dropped)))

    def start(self, grant):
        self.calls.append(("start", grant))

    def settle(self):
        self.calls.append(("settle",))
        return self.busy.pop(0)

    def idle(self, timeout):
        self.calls.append(("idle", timeout))


# steps, settle() answers, changed -> calls on the hooks, forced flags
STEPS = [
    ("a grant runs in a worker at once",
     [Step(start=["A"])], [True], True, [("start", "A"), ("settle",)], [True]),
    ("everything parked: wait, then a grant",
     [Step(), Step(start=["B"])], [False, True], False,
     [("settle",), ("idle", 0.5), ("start", "B"), ("settle",)], [False, False]),
    ("a dropped spec and the run is done",
     [Step(dropped={"C": "blocked"}, done=True)], [], True, [("drop", ["C"])], [True]),
]


@pytest.mark.parametrize(("steps", "busy", "changed", "calls", "forced"), [row[1:] for row in STEPS],
                         ids=[row[0] for row in STEPS])
def test_one_scheduling_step_runs_without_a_strategy(steps, busy, changed, calls, forced):
    dispatcher, hooks = Dispatcher(steps), Hooks(busy)
    last = run_step(dispatcher, hooks, changed)
    assert hooks.calls == calls
    assert dispatcher.forced == forced
    assert last is not None and not dispatcher.steps
