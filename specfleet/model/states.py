# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one state machine of a spec's lifecycle.

::

    queued ──▶ running ──▶ completed ──▶ verified ──▶ merged ──▶ (promoted to the base branch)
      ▲  │        │            │            │  ▲ │        │
      │  ▼        ▼            ▼            ▼  │ ▼        ▼
      │ blocked  failed     (queued)     in_review  conflict  (queued: rejected in review)
      │  cancelled

* ``queued``: fed and valid; waits for its dependencies, a slot and its path locks.
* ``running``: holds a slot lease and path locks; an attempt is under way on a node.
* ``completed``: the node-side pipeline succeeded (agent, verify, gates); branch collected.
* ``verified``: re-checked on the controller in a clean checkout; ready for the merge queue.
* ``in_review``: waits for a human (required review, or risky paths).
* ``merged``: landed on the integration branch in a tested commit; dependents may start.
  Final once promoted to the base branch; before that a reviewer may reject it (reverted
  from integration, back to ``queued`` with the reason as feedback).
* ``conflict``: the branch does not merge cleanly; goes back to ``queued`` with feedback.
* ``failed``: attempts used up (or a permanent error); ``reason`` says why.
* ``blocked``: a dependency failed or was cancelled; ``reason`` names it.
* ``cancelled``: stopped by a person, or its spec file was removed before it ran.

``failed``, ``blocked`` and ``cancelled`` are not terminal: ``rescue`` (a person fixed the
spec or its dependency) moves them back to ``queued``.
"""
from __future__ import annotations

from enum import Enum


class SpecState(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    VERIFIED = "verified"
    IN_REVIEW = "in_review"
    MERGED = "merged"
    CONFLICT = "conflict"
    FAILED = "failed"
    BLOCKED = "blocked"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value


S = SpecState

TRANSITIONS: dict[SpecState, frozenset[SpecState]] = {
    S.QUEUED: frozenset({S.RUNNING, S.BLOCKED, S.CANCELLED, S.FAILED}),
    S.RUNNING: frozenset({S.COMPLETED, S.QUEUED, S.FAILED, S.CANCELLED}),
    S.COMPLETED: frozenset({S.VERIFIED, S.QUEUED, S.FAILED, S.CANCELLED}),
    S.VERIFIED: frozenset({S.MERGED, S.IN_REVIEW, S.CONFLICT, S.QUEUED, S.FAILED, S.CANCELLED}),
    S.IN_REVIEW: frozenset({S.VERIFIED, S.QUEUED, S.FAILED, S.CANCELLED}),
    S.CONFLICT: frozenset({S.QUEUED, S.FAILED, S.CANCELLED}),
    S.FAILED: frozenset({S.QUEUED}),
    S.BLOCKED: frozenset({S.QUEUED, S.CANCELLED}),
    S.CANCELLED: frozenset({S.QUEUED}),
    # Rejected in review before promotion: reverted from integration and queued again.
    S.MERGED: frozenset({S.QUEUED}),
}

# A state change into one of these must say why (shown in status, reports and to agents).
NEEDS_REASON = frozenset({S.FAILED, S.BLOCKED, S.CANCELLED, S.CONFLICT})
# States in which a spec holds a slot and path locks.
HOLDS_SLOT = frozenset({S.RUNNING})
# States whose work (a branch) exists and is not merged yet: never deleted by cleanup, and
# only a merge stage (or a person) moves a dependency in one of them on.
UNMERGED_WORK = frozenset({S.COMPLETED, S.VERIFIED, S.IN_REVIEW, S.CONFLICT})
# A dependency counts as done when it is merged into the integration branch: its dependents
# start from that branch's tip, so they build on tested work.
DEPENDENCY_MERGED = frozenset({S.MERGED})
# Plain jobs (``specfleet_job_command``: scheduling tests, benchmarks) have no branch to
# merge; for them a completed dependency is done. The daily report counts these as succeeded.
DEPENDENCY_COMPLETED = frozenset({S.COMPLETED, S.VERIFIED, S.IN_REVIEW, S.MERGED})


class RunKind(str, Enum):
    """What a dispatch run's specs run, decided once at feed and recorded with the run.

    ``agents``: the coding-agent pipeline, whose work is done when merged. ``jobs``: one plain
    shell command per spec (``-e specfleet_job_command=...``: scheduling tests, benchmarks),
    which has no branch to merge, so completed is done and nothing lands.
    """

    AGENTS = "agents"
    JOBS = "jobs"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def of(cls, job_command: str | None) -> RunKind:
        return cls.JOBS if job_command else cls.AGENTS

    @property
    def lands(self) -> bool:
        """Its specs go through verify and the merge queue."""
        return self is RunKind.AGENTS

    @property
    def done(self) -> SpecState:
        """The state in which a spec of this run is done."""
        return S.MERGED if self.lands else S.COMPLETED

    @property
    def dependency_done(self) -> frozenset[SpecState]:
        """The states of a dependency that let its dependents start."""
        return DEPENDENCY_MERGED if self.lands else DEPENDENCY_COMPLETED


# A dependency in these states can never become done without a person (rescue).
DEPENDENCY_DEAD = frozenset({S.FAILED, S.CANCELLED, S.BLOCKED})
# The order states are listed in (status, reports): the lifecycle's.
STATE_ORDER = tuple(s.value for s in SpecState)
TERMINAL = frozenset(s for s, targets in TRANSITIONS.items() if not targets)  # none: see merged


class InvalidTransition(ValueError):
    pass


def check_transition(current: SpecState | str, target: SpecState | str, reason: str | None = None) -> None:
    """Raise :class:`InvalidTransition` unless ``current -> target`` is in :data:`TRANSITIONS`."""
    current, target = SpecState(current), SpecState(target)
    if target not in TRANSITIONS[current]:
        allowed = ", ".join(sorted(t.value for t in TRANSITIONS[current])) or "nothing (terminal)"
        raise InvalidTransition(f"a {current} spec cannot become {target}; from {current} it can become {allowed}")
    if target in NEEDS_REASON and not reason:
        raise InvalidTransition(f"moving a spec to {target} needs a reason")
