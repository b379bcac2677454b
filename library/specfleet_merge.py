# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# The work is done by the action plugin plugins/action/specfleet_merge.py on the controller;
# this file carries the documentation.
from __future__ import annotations

DOCUMENTATION = r"""
---
module: specfleet_merge
short_description: Run a project's merge queue into its integration branch
description:
  - Takes the C(verified) specs whose dependencies are merged, in dependency order, up to
    C(merge_batch) (project.yml, default 8) at a time, merges them one by one onto the tip of
    C(specfleet/<project>/integration) in a throw-away clone and runs the project's
    C(test_command) (else the batch's verify commands) on the result.
  - The integration branch moves (compare-and-swap) only to a commit whose test passed. A failing
    batch is tested once more (flaky tests), then bisected - halves are tested on the latest good
    tip until the culprits are known; the others land.
  - A branch that does not merge cleanly becomes C(conflict) with its files and, like a culprit,
    goes back to the queue with the failure as feedback (an attempt is used; the next attempt
    starts from the fresh integration tip). Branches are never deleted.
  - One queue per project runs at a time (a lock file under C($SPECFLEET_HOME/locks)). A queue
    killed midway leaves integration at a tested commit; the next run recognises specs whose
    merge already landed.
  - With C(promote=auto) in project.yml the base branch is fast-forwarded to the tested tip.
options:
  project:
    description: Name of the project.
    type: str
    required: true
  task_id:
    description: The task fails unless this spec ends up merged (the dispatch pipeline's use).
    type: str
  run_id:
    description: The dispatch run recorded on the state changes.
    type: str
  db:
    description: As for M(specfleet_feed).
    type: path
  specs_root:
    description: As for M(specfleet_validate).
    type: path
attributes:
  check_mode:
    support: full
    details: Lists the branches that would enter the queue.
author: specfleet contributors
"""

EXAMPLES = r"""
- name: Merge every verified branch of the project
  specfleet_merge:
    project: clawmarketing
"""

RETURN = r"""
merged:
  description: Specs merged into the integration branch by this run.
  returned: success
  type: list
  elements: str
conflicts:
  description: Specs whose branch did not merge, with the conflicting files.
  returned: success
  type: dict
broken:
  description: Specs the bisection blamed for a failing build, with the test output tail.
  returned: success
  type: dict
test_runs:
  description: How many times the test command ran.
  returned: success
  type: int
tip:
  description: The integration branch's commit after the run.
  returned: success
  type: str
"""
