# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Rejecting in review: revert a spec (and its merged dependents) from integration, test that, queue them again.

The reverts are made in a scratch clone, newest merge first, and tested like a merge-queue
batch; integration moves only when that test passes, so it stays at a tested commit. The
reason becomes each spec's feedback for its next attempt.
"""
from __future__ import annotations

import time

from specfleet.attempt.workspace import integration_branch
from specfleet.land.queue import MergeQueue, QueueResult, queue_lock
from specfleet.land.repository import LandingError, local_repository, tip
from specfleet.land.review import pending_review
from specfleet.land.scratch import publish_tested, scratch
from specfleet.land.where import Where
from specfleet.model.graph import SpecGraph
from specfleet.model.project import ProjectConfig
from specfleet.store.core import Store


def reject(store: Store, config: ProjectConfig, task_id: str, reason: str, run_id: str | None = None,
           where: Where | None = None) -> dict:
    """Revert ``task_id`` (and its merged, unpromoted dependents) from integration; queue them again."""
    if not reason.strip():
        raise LandingError("a rejection needs a reason (it becomes the agent's feedback)")
    repository = local_repository(config)
    pending = {e["task_id"]: e for e in pending_review(store, config, repository)}
    if task_id not in pending:
        raise LandingError(f"{task_id} is not waiting for review in {config.name} (merged and not promoted)")
    rows = {r.task_id: r for r in store.specs(config.name)}
    graph = SpecGraph({t: r.depends_on for t, r in rows.items()})
    victims = [task_id] + sorted(d for d in graph.descendants(task_id) if d in pending)
    branch = integration_branch(config.name)
    old = tip(repository, branch)
    started = time.time()
    with queue_lock(config.name), scratch(repository, config.name) as work:
        work.checkout(old)
        for victim in sorted(victims, key=lambda t: list(pending).index(t), reverse=True):
            work.git("revert", "--no-edit", "-m", "1", pending[victim]["merge_commit"])
        reverted = work.head()
        queue = MergeQueue(store, config, run_id, where)
        ok, output = queue._test(work, reverted, [t for t in pending if t not in victims], QueueResult())
        store.record_check(config.name, task_id, "revert", reverted, ok,
                           f"revert of {', '.join(victims)} " + ("tested" if ok else "fails the tests"),
                           {"output": output}, started)
        if not ok:
            raise LandingError(f"reverting {', '.join(victims)} breaks the tests of {branch}; nothing changed:\n{output}")
        publish_tested(work, config, branch, reverted, old)
    reasons = {victim: f"rejected in review: {reason}" if victim == task_id
               else f"dependency {task_id} was rejected in review" for victim in victims}
    store.record_rejection(config.name, reasons, reverted, run_id)
    return {"reverted": victims, "commit": reverted, "msg": f"reverted {', '.join(victims)} from {branch} at "
                                                            f"{reverted[:12]} (tested); queued again"}
