# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Getting collected work onto the project's branches: verify, merge queue, review.

Nothing reaches the base branch that was not tested exactly as it lands. The stage lives in
modules named for what they hold; this module only re-exports their public names for the
callers that still import ``specfleet.land.landing``:

* :mod:`~specfleet.land.where`: where the project's commands run (controller sandbox,
  unsandboxed controller, a node) - decided by :func:`~specfleet.land.where.landing_place`;
* :mod:`~specfleet.land.repository` and :mod:`~specfleet.land.scratch`: the repository,
  its branches (moved only by compare-and-swap) and the throw-away clones work happens in;
* :mod:`~specfleet.land.verify`: re-check a ``completed`` spec's commit;
* :mod:`~specfleet.land.queue`: the merge queue (batches, flaky retry, bisection, resume);
* :mod:`~specfleet.land.review` and :mod:`~specfleet.land.reject`: promote to the base
  branch, or revert from integration and queue again.

A crash at any point leaves integration at a tested commit: the branch only moves after
the test of exactly that commit passed, and a resumed queue recognises the specs whose
merges are already on integration.
"""
from __future__ import annotations

from collections.abc import Sequence

from specfleet.attempt.workspace import integration_branch
from specfleet.land import llmreview
from specfleet.land.queue import MergeQueue, QueueResult, merge_queue, queue_lock
from specfleet.land.reject import reject
from specfleet.land.repository import LandingError, local_repository, move_branch, publish_branch, tip
from specfleet.land.review import pending_review, promote
from specfleet.land.scratch import Scratch, scratch
from specfleet.land.verify import OUTPUT_TAIL, Verdict, verify
from specfleet.land.where import LandingPlace, OnController, OnNode, landing_place, node_test_script
from specfleet.store.core import Store

__all__ = [
    "OUTPUT_TAIL", "LandingError", "LandingPlace", "MergeQueue", "OnController", "OnNode", "QueueResult", "Scratch",
    "Verdict", "integration_branch", "landing_place", "llmreview", "local_repository", "merge_queue", "move_branch",
    "node_test_script", "pending_review", "promote", "publish_branch", "queue_lock", "reject", "scratch", "send_back",
    "tip", "verify",
]


def send_back(store: Store, project: str, task_id: str, reason: str, feedback: str, run_id: str | None,
              conflict_files: Sequence[str] = ()) -> str:
    """A spec failure found after the node (:meth:`Store.send_back <specfleet.store.landing.LandingQueries.send_back>`)."""
    return store.send_back(project, task_id, reason, feedback, run_id, conflict_files)
