# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# The work is done by the action plugin plugins/action/specfleet_verify.py on the controller;
# this file carries the documentation.
from __future__ import annotations

DOCUMENTATION = r"""
---
module: specfleet_verify
short_description: Re-check completed specs on the controller before they may merge
description:
  - For each C(completed) spec, checks out its collected commit in a throw-away clone of the
    project's repository (the user's working tree is never used) and runs the spec's C(verify)
    command, the gates (diff, stubs, scope, tests_kept, tests_ran) on the commit's own diff, and
    the project's C(test_command).
  - All pass to C(verified) (ready for M(specfleet_merge)). Any failure is a spec failure - an
    attempt is used, the spec is queued again (or C(failed) after its last attempt, its dependents
    C(blocked)), and the failing output becomes the next attempt's feedback.
  - Every result is stored in the C(checks) table with the commands' output tails.
options:
  project:
    description: Name of the project.
    type: str
    required: true
  tasks:
    description: Only these specs; a failure then fails the task. Default every completed spec.
    type: list
    elements: str
    default: []
  run_id:
    description: The dispatch run recorded on the state changes.
    type: str
  db:
    description: As for M(specfleet_feed).
    type: path
  specs_root:
    description: As for M(specfleet_validate).
    type: path
  preflight:
    description:
      - Only check that the project's commands can run where they would (on the controller, that
        its sandbox works; see C(specfleet_unsafe_controller_verify)); verify nothing.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    details: Lists what would be verified.
author: specfleet contributors
"""

EXAMPLES = r"""
- name: Verify every completed spec of the project
  specfleet_verify:
    project: clawmarketing
"""

RETURN = r"""
verified:
  description: Specs that passed and are now C(verified).
  returned: success
  type: list
  elements: str
sent_back:
  description: Specs that failed, with their new state (C(queued) or C(failed)).
  returned: success
  type: dict
checks:
  description: Per spec, every check with its result and output tail.
  returned: success
  type: dict
where:
  description: With O(preflight), where the commands would run (C(controller) or the node's name).
  returned: preflight
  type: str
"""
