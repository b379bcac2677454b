# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""How a spec's pipeline ended, and how an attempt is recorded: decided here, carried in results.

An action plugin that knows why a step failed says so with one key in its result,
:data:`RESULT_KEY`, holding an :class:`Ending` value; the strategy reads it (and Ansible's
own ``unreachable``/``timedout``) with :func:`Ending.of_result` and hands it to the
dispatcher, which asks the ending what it means: is the node to blame (quarantine), is it
the spec's failure (an attempt is charged), may the job still be alive (a leftover). The
store records an attempt's :class:`Outcome`; reports group outcomes by
:attr:`Outcome.category`. Nothing else matches on action names or ad-hoc keys.
"""
from __future__ import annotations

from collections.abc import Mapping
from enum import Enum

RESULT_KEY = "specfleet_ending"


class Ending(str, Enum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"                  # the spec's own failure: one of its attempts is used
    UNREACHABLE = "unreachable"        # the node did not answer: not the spec's fault
    INFRASTRUCTURE = "infrastructure"  # the pipeline's own machinery failed (not the spec)
    STALLED = "stalled"                # the job's heartbeat stopped; it was killed (not the node's fault)
    JOB_ENDED = "job_ended"            # the machinery failed, and the job is known to have ended

    def __str__(self) -> str:
        return self.value

    @property
    def infrastructure(self) -> bool:
        """Not the spec's fault: requeued without using one of its attempts."""
        return self in (Ending.UNREACHABLE, Ending.INFRASTRUCTURE, Ending.STALLED, Ending.JOB_ENDED)

    @property
    def blames_node(self) -> bool:
        """The node is quarantined for a while."""
        return self in (Ending.UNREACHABLE, Ending.INFRASTRUCTURE, Ending.JOB_ENDED)

    @property
    def may_leave_job(self) -> bool:
        """The job may still be alive on the node (it is adopted or killed later)."""
        return self in (Ending.UNREACHABLE, Ending.INFRASTRUCTURE)

    @classmethod
    def of_result(cls, data: Mapping) -> Ending | None:
        """What a task result says about its spec's pipeline; ``None`` for a step that went on."""
        said = data.get(RESULT_KEY)
        if said:
            return cls(said)
        if data.get("unreachable"):
            return cls.UNREACHABLE
        if data.get("failed"):
            # A step that hit its task timeout (a hung node) is the node's fault, not the spec's.
            return cls.INFRASTRUCTURE if data.get("timedout") else cls.FAILED
        return None

    def result(self, **fields) -> dict:
        """A failed action result carrying this ending."""
        return {"failed": self is not Ending.SUCCEEDED, RESULT_KEY: self.value, **fields}


class Outcome(str, Enum):
    """``attempts.outcome``: how one attempt ended, as the store records it."""

    SUCCEEDED = "succeeded"
    SPEC_FAILURE = "spec_failure"
    INFRA_FAILURE = "infra_failure"
    LOST = "lost"            # its run died while the job ran (an infrastructure outcome)
    ABANDONED = "abandoned"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value

    @property
    def category(self) -> str:
        """The daily report's category (the Gantt chart's colour)."""
        return CATEGORIES[self]

    @property
    def charged(self) -> bool:
        """Used one of the spec's attempts."""
        return self is Outcome.SPEC_FAILURE

    @classmethod
    def of(cls, ending: Ending, cancelled: bool = False) -> Outcome:
        if ending is Ending.SUCCEEDED:
            return cls.SUCCEEDED
        if cancelled:
            return cls.CANCELLED
        return cls.INFRA_FAILURE if ending.infrastructure else cls.SPEC_FAILURE


CATEGORIES = {Outcome.SUCCEEDED: "succeeded", Outcome.SPEC_FAILURE: "failed", Outcome.INFRA_FAILURE: "infra",
              Outcome.LOST: "lost", Outcome.ABANDONED: "lost", Outcome.CANCELLED: "killed"}
CATEGORY_ORDER = ("succeeded", "failed", "infra", "lost", "killed", "running")
FAILURE_CATEGORIES = ("failed", "infra", "lost")
