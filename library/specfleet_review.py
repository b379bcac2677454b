# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# The work is done by the action plugin plugins/action/specfleet_review.py on the controller;
# this file carries the documentation.
from __future__ import annotations

DOCUMENTATION = r"""
---
module: specfleet_review
short_description: The review queue - list, approve (promote) or reject merged specs
description:
  - Lists the specs merged on C(specfleet/<project>/integration) but not yet on the base branch, with
    diff stat, controller verification, LLM review verdict, attempts and hours from first attempt
    to merge.
  - O(approve) fast-forwards the base branch to the newest tested integration commit that holds
    exactly the approved specs (and pushes it when project.yml sets C(push)). Integration is
    linear, so approving a spec needs the specs merged before it approved too; the error names them.
    A checked-out base branch is fast-forwarded in place and must be clean.
  - O(reject) reverts the spec, and its merged dependents, from integration, tests the result,
    moves integration only if the test passed, and queues them again with O(reason) as feedback.
options:
  project:
    description: Name of the project.
    type: str
    required: true
  approve:
    description: Specs to approve, or C(all).
    type: list
    elements: str
    default: []
  reject:
    description: A spec to reject.
    type: str
  reason:
    description: Why it is rejected (required with O(reject)); the agent sees it.
    type: str
    default: ""
  db:
    description: As for M(specfleet_feed).
    type: path
  specs_root:
    description: As for M(specfleet_validate).
    type: path
author: specfleet contributors
"""

EXAMPLES = r"""
- name: Approve everything that waits
  specfleet_review:
    project: clawmarketing
    approve: [all]
"""

RETURN = r"""
queue:
  description: What still waits for review after this run, oldest merge first.
  returned: always
  type: list
  elements: dict
promoted:
  description: Specs whose work reached the base branch.
  returned: when approving
  type: list
  elements: str
reverted:
  description: Specs reverted from integration and queued again.
  returned: when rejecting
  type: list
  elements: str
"""
