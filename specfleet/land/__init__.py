# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Getting collected work onto the project's branches: verify, merge queue, review.

Nothing reaches the base branch that was not tested exactly as it lands. The stage lives in
modules named for what they hold:

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
