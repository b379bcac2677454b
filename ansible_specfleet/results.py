# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a pipeline step's result says about its spec, read in one place for the strategy."""
from __future__ import annotations

from dataclasses import dataclass

from specfleet.model.ending import Ending

COLLECT_ACTIONS = ("specfleet_attempt", "ansible.legacy.specfleet_attempt")
START_ACTIONS = COLLECT_ACTIONS + ("specfleet_job", "ansible.legacy.specfleet_job")
WAIT_ACTIONS = ("specfleet_job", "ansible.legacy.specfleet_job")


def _went_on(data: dict) -> bool:
    return not (data.get("failed") or data.get("unreachable") or data.get("skipped"))


@dataclass(frozen=True)
class StepReport:
    started: str | None = None      # run directory of the job this step started or attached to
    waited: bool = False            # this step waited on the spec's started job
    collected: bool = False         # this step brought the spec's branch back from its node
    failure: str | None = None      # first line of the step's failure message, if it failed
    ending: Ending | None = None    # what the failed step said about the spec's pipeline

    @classmethod
    def of(cls, task, data: dict) -> StepReport:
        state = task.args.get("state")
        if task.action in COLLECT_ACTIONS and state == "collected" and _went_on(data):
            return cls(collected=True)
        waited = task.action in WAIT_ACTIONS and state == "finished"
        started = (data.get("run_dir") if not waited and task.action in START_ACTIONS and state == "started"
                   and _went_on(data) else None)
        if not (data.get("failed") or data.get("unreachable")):
            return cls(started=started, waited=waited)
        infra = data.get("specfleet_infrastructure") or data.get("timedout")
        if data.get("specfleet_stalled"):
            ending = Ending.STALLED
        elif infra:
            ending = Ending.JOB_ENDED if data.get("specfleet_job_ended") else Ending.INFRASTRUCTURE
        else:
            ending = Ending.FAILED
        return cls(started=started, waited=waited, ending=ending,
                   failure=str(data.get("msg") or "failed").splitlines()[0][:300])


def waits_for_job(task) -> bool:
    """The (not yet run) step waits for the spec's started job, so the spec may be parked meanwhile."""
    return task.action in WAIT_ACTIONS and task.args.get("state") == "finished"
