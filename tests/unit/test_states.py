"""A spec's lifecycle as a table: (current state, target, reason) -> allowed, or the error it gives."""
from __future__ import annotations

import itertools

import pytest

from specfleet.model.states import (
    NEEDS_REASON,
    TERMINAL,
    TRANSITIONS,
    InvalidTransition,
    RunKind,
    SpecState,
    check_transition,
)

ALLOWED = [(a, b) for a, targets in TRANSITIONS.items() for b in sorted(targets)]
FORBIDDEN = [(a, b) for a, b in itertools.product(SpecState, SpecState) if b not in TRANSITIONS[a]]

OK = None
CASES = [
    # current     target        reason          -> error (OK: allowed)
    # the pipeline, forward
    ("queued",    "running",    None,           OK),
    ("running",   "completed",  None,           OK),
    ("completed", "verified",   None,           OK),
    ("verified",  "in_review",  None,           OK),
    ("in_review", "verified",   None,           OK),
    ("verified",  "merged",     None,           OK),
    # back to the queue: retries, revisions, rescue, a rejection after merge
    ("running",   "queued",     None,           OK),
    ("failed",    "queued",     None,           OK),
    ("blocked",   "queued",     None,           OK),
    ("cancelled", "queued",     None,           OK),
    ("merged",    "queued",     None,           OK),
    # failure-like states need a reason (shown in status, reports and to agents)
    ("queued",    "failed",     "because",      OK),
    ("queued",    "failed",     None,           "moving a spec to failed needs a reason"),
    ("queued",    "blocked",    None,           "moving a spec to blocked needs a reason"),
    ("queued",    "cancelled",  None,           "moving a spec to cancelled needs a reason"),
    ("verified",  "conflict",   None,           "moving a spec to conflict needs a reason"),
    ("verified",  "conflict",   "rebase failed", OK),
    # forbidden: skipping a stage, leaving merged or failed sideways, standing still
    ("merged",    "completed",  "because",      "a merged spec cannot become completed"),
    ("merged",    "running",    "because",      "a merged spec cannot become running"),
    ("queued",    "completed",  "because",      "a queued spec cannot become completed"),
    ("queued",    "merged",     "because",      "a queued spec cannot become merged"),
    ("running",   "verified",   "because",      "a running spec cannot become verified"),
    ("running",   "merged",     "because",      "a running spec cannot become merged"),
    ("failed",    "running",    "because",      "a failed spec cannot become running"),
    ("blocked",   "running",    "because",      "a blocked spec cannot become running"),
    ("completed", "merged",     "because",      "a completed spec cannot become merged"),
    ("conflict",  "merged",     "because",      "a conflict spec cannot become merged"),
    ("cancelled", "running",    "because",      "a cancelled spec cannot become running"),
    ("queued",    "queued",     "because",      "a queued spec cannot become queued"),
    # the error says what would be right
    ("failed",    "running",    None,           "from failed it can become queued"),
]


@pytest.mark.parametrize(("current", "target", "reason", "error"), CASES,
                         ids=[f"{c}->{t}{'' if r else ' (no reason)'}" for c, t, r, _ in CASES])
def test_transition_table(current, target, reason, error):
    if error is OK:
        check_transition(current, target, reason)
    else:
        with pytest.raises(InvalidTransition, match=error):
            check_transition(current, target, reason)


@pytest.mark.parametrize(("current", "target"), ALLOWED, ids=[f"{a}->{b}" for a, b in ALLOWED])
def test_every_allowed_transition_passes(current, target):
    check_transition(current, target, reason="because")


@pytest.mark.parametrize("target", sorted(NEEDS_REASON))
def test_failure_like_states_need_a_reason(target):
    current = next(a for a, b in ALLOWED if b == target)
    with pytest.raises(InvalidTransition, match="needs a reason"):
        check_transition(current, target)


def test_the_table_is_closed_and_forbids_most_pairs():
    assert len(FORBIDDEN) > len(ALLOWED)
    assert TERMINAL == set()  # merged is final once promoted; before that a reviewer may reject it
    assert TRANSITIONS[SpecState.MERGED] == {SpecState.QUEUED}
    reachable, frontier = {SpecState.QUEUED}, [SpecState.QUEUED]
    while frontier:
        for target in TRANSITIONS[frontier.pop()]:
            if target not in reachable:
                reachable.add(target)
                frontier.append(target)
    assert reachable == set(SpecState)


def test_unknown_state_names_are_errors():
    with pytest.raises(ValueError):
        check_transition("queued", "done")


@pytest.mark.parametrize(("job_command", "kind", "done", "lands"), [
    (None, RunKind.AGENTS, SpecState.MERGED, True),
    ("", RunKind.AGENTS, SpecState.MERGED, True),
    ("sleep 1", RunKind.JOBS, SpecState.COMPLETED, False),
])
def test_a_run_kind_is_decided_by_the_job_command_and_says_when_a_spec_is_done(job_command, kind, done, lands):
    found = RunKind.of(job_command)
    assert (found, found.done, found.lands) == (kind, done, lands)
    assert done in found.dependency_done
