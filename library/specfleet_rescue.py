# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# The work is done by the action plugin plugins/action/specfleet_rescue.py on the controller;
# this file carries the documentation.
from __future__ import annotations

DOCUMENTATION = r"""
---
module: specfleet_rescue
short_description: Queue a project's failed and blocked specs again after a person fixed them
description:
  - Feeds the project first (exactly as M(specfleet_feed)), so the fixed spec files become new
    revisions, then moves specs back to C(queued) with their attempt count reset.
  - Without O(tasks), every C(failed) and C(blocked) spec of the project. With O(tasks), those
    specs (C(cancelled) ones too) and the C(blocked) specs that depend on them. Completed work is
    never run again (the model is HTCondor DAGMan's rescue DAG).
  - It queues; the next dispatch runs them.
options:
  project:
    description: Name of the project.
    type: str
    required: true
  tasks:
    description: Only these specs (and their blocked dependents).
    type: list
    elements: str
    default: []
  db:
    description: As for M(specfleet_feed).
    type: path
  specs_root:
    description: As for M(specfleet_validate).
    type: path
  executors:
    description: As for M(specfleet_validate).
    type: raw
  default_executor:
    description: As for M(specfleet_validate).
    type: str
attributes:
  action:
    support: full
  async:
    support: none
  check_mode:
    support: full
    details: Validates and reports what the feed would change; queues nothing.
  platform:
    platforms: posix
author: specfleet contributors
"""

EXAMPLES = r"""
- name: Queue every failed and blocked spec of the project again
  specfleet_rescue:
    project: clawmarketing
"""

RETURN = r"""
requeued:
  description: Specs moved back to C(queued).
  returned: success
  type: list
  elements: str
skipped:
  description: Named specs left alone, with their state (completed work, running specs).
  returned: success
  type: dict
"""
