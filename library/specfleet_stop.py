# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# The work is done by the action plugin plugins/action/specfleet_stop.py on the controller;
# this file carries the documentation.
from __future__ import annotations

DOCUMENTATION = r"""
---
module: specfleet_stop
short_description: Ask the dispatch runs of a project to drain or cancel, or wait for them to end
description:
  - Records a stop request on every live dispatch run of the project in the state store. Runs see
    it within a second. C(drain) starts nothing new and lets running specs finish; C(cancel) also
    makes specs whose job was killed go back to the queue, their attempt recorded as cancelled
    and not counted. A C(cancel) is never weakened by a later C(drain).
  - Returns the jobs running now (node, task id, attempt, run id) so that the playbook can kill
    them with M(specfleet_job) C(state=cancelled).
  - With C(wait=true) it only waits until no dispatch run of the project is left.
  - Leases of runs that died are reclaimed first; their specs go back to the queue.
options:
  project:
    description: Project name.
    type: str
    required: true
  mode:
    description: C(drain) or C(cancel).
    type: str
    choices: [drain, cancel]
    default: drain
  wait:
    description: Wait for the runs to end instead of asking them to stop.
    type: bool
    default: false
  timeout:
    description: Seconds to wait with C(wait=true) before failing.
    type: int
    default: 300
  db:
    description: As for M(specfleet_feed).
    type: path
attributes:
  check_mode:
    support: full
    details: Lists the live runs and records nothing.
notes:
  - Runs on the controller; target C(localhost).
author:
  - specfleet contributors
"""

EXAMPLES = r"""
- name: Drain the project's dispatch runs and wait for them to end
  specfleet_stop:
    project: clawmarketing
    mode: drain
    wait: true
"""

RETURN = r"""
runs:
  description: The live dispatch runs of the project and the stop recorded on each.
  returned: always
  type: list
  elements: dict
jobs:
  description: With C(mode=cancel), the running jobs (node, task id, run id, attempt) to kill.
  returned: always
  type: list
  elements: dict
"""
