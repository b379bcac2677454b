from __future__ import annotations

import itertools

import pytest

from specfleet.model.states import NEEDS_REASON, TERMINAL, TRANSITIONS, InvalidTransition, SpecState, check_transition

ALLOWED = [(a, b) for a, targets in TRANSITIONS.items() for b in sorted(targets)]
FORBIDDEN = [(a, b) for a, b in itertools.product(SpecState, SpecState) if b not in TRANSITIONS[a]]


@pytest.mark.parametrize(("current", "target"), ALLOWED, ids=[f"{a}->{b}" for a, b in ALLOWED])
def test_every_allowed_transition_passes(current, target):
    check_transition(current, target, reason="because")


@pytest.mark.parametrize(("current", "target"), [
    ("merged", "completed"), ("merged", "running"), ("queued", "completed"), ("queued", "merged"),
    ("running", "verified"), ("running", "merged"), ("failed", "running"), ("blocked", "running"),
    ("completed", "merged"), ("conflict", "merged"), ("cancelled", "running"), ("queued", "queued"),
])
def test_sampled_forbidden_transitions_are_refused(current, target):
    with pytest.raises(InvalidTransition, match=f"a {current} spec cannot become {target}"):
        check_transition(current, target, reason="because")


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


@pytest.mark.parametrize("target", sorted(NEEDS_REASON))
def test_failure_like_states_need_a_reason(target):
    current = next(a for a, b in ALLOWED if b == target)
    with pytest.raises(InvalidTransition, match="needs a reason"):
        check_transition(current, target)


def test_unknown_state_names_are_errors():
    with pytest.raises(ValueError):
        check_transition("queued", "done")
