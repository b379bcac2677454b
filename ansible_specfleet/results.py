# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a pipeline step's result says about its spec: written by the action plugins, read here.

The action plugins say what happened with a few result keys, so the strategy never matches
on action names: :data:`JOB_STARTED` (the run directory of the job the step started or
attached to), :data:`JOB_WAITED` (the run directory of the job it waited on),
:data:`BRANCH_COLLECTED` (the task id whose branch it brought back), and on failure the
:class:`~specfleet.model.ending.Ending` under ``specfleet.model.ending.RESULT_KEY``
(``Ending.X.result(...)``). :meth:`StepReport.of` reads all of them.

Before a step runs, the strategy asks :func:`waits_for_job` whether it will wait for a
started job (so the spec can be parked on a node watcher meanwhile); the action plugin's
class answers (``waits_for_job(args)``), not its name.
"""
from __future__ import annotations

from dataclasses import dataclass

from specfleet.model.ending import Ending

JOB_STARTED = "specfleet_job_started"
JOB_WAITED = "specfleet_job_waited"
BRANCH_COLLECTED = "specfleet_branch_collected"


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
    def of(cls, data: dict) -> StepReport:
        went_on = _went_on(data)
        if went_on and data.get(BRANCH_COLLECTED):
            return cls(collected=True)
        started = data.get(JOB_STARTED) if went_on else None
        waited = bool(data.get(JOB_WAITED))
        if not (data.get("failed") or data.get("unreachable")):
            return cls(started=started, waited=waited)
        return cls(started=started, waited=waited, ending=Ending.of_result(data),
                   failure=str(data.get("msg") or "failed").splitlines()[0][:300])


_WAITERS: dict[str, object] = {}  # action name -> its plugin class's waits_for_job, or None


def waits_for_job(task) -> bool:
    """The (not yet run) step waits for the spec's started job, so the spec may be parked meanwhile."""
    if task.action not in _WAITERS:
        from ansible.plugins.loader import action_loader
        plugin = action_loader.get(task.action, class_only=True, collection_list=task.collections)
        _WAITERS[task.action] = getattr(plugin, "waits_for_job", None)
    asks = _WAITERS[task.action]
    return bool(asks and asks(task.args))
