# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# The work is done by the action plugin plugins/action/specfleet_harvest.py; this file
# carries the documentation.
from __future__ import annotations

DOCUMENTATION = r"""
---
module: specfleet_harvest
short_description: Settle the jobs earlier dispatch runs left on a worker node
description:
  - A job on a node outlives the run that started it when the controller is killed, a run is
    interrupted or the node is cut off. specfleet records it as a I(leftover) that keeps its slot
    and path locks.
  - This action reads, in one SSH command, what became of every leftover of the node
    (C(running), C(finished), C(lost) without an exit code, C(missing)) and settles it.
    A leftover whose spec is still queued is kept, and the spec's next grant adopts it (re-attaches
    to the job or harvests its result), so no second agent is started. A leftover whose spec
    moved on (it ran again elsewhere) is settled, and is killed first if it still runs. Lost
    and missing jobs are settled.
  - Run against the node (the dispatch play's preflight does it for every reachable node). The
    node answered, so it is marked healthy; a quarantined node is re-admitted (event
    C(node_readmitted)).
options:
  node:
    description: The node's inventory name, as recorded in the state store.
    type: str
    required: true
  root:
    description: The node's work root (C(specfleet_work_root)).
    type: str
    required: true
  db:
    description: The state database; defaults as for M(specfleet_feed).
    type: path
  run_id:
    description: The run recorded in the events this writes.
    type: str
attributes:
  action:
    support: full
  async:
    support: none
  check_mode:
    support: full
    details: Lists the leftovers, looks at and changes nothing.
  platform:
    platforms: posix
author: specfleet contributors
"""

EXAMPLES = r"""
- name: Settle the jobs earlier runs left on the node
  specfleet_harvest:
    node: "{{ inventory_hostname }}"
    root: "{{ specfleet_work_root | default('~/specfleet') }}"
"""

RETURN = r"""
kept:
  description: Leftovers kept for adoption, as C(project/task#attempt).
  returned: always
  type: list
  elements: str
settled:
  description: Leftovers settled (their slot and locks are free).
  returned: always
  type: list
  elements: str
killed:
  description: Settled leftovers that were still running and were killed (their spec had moved on).
  returned: always
  type: list
  elements: str
finished:
  description: Kept leftovers whose job has finished (what C(playbooks/collect.yml) collects).
  returned: always
  type: list
  elements: dict
running:
  description: Kept leftovers whose job still runs (the next dispatch attaches to them).
  returned: always
  type: list
  elements: dict
"""
