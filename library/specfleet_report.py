# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# The work is done by the action plugin plugins/action/specfleet_report.py on the controller;
# this file carries the documentation.
from __future__ import annotations

DOCUMENTATION = r"""
---
module: specfleet_report
short_description: Say where every spec of a dispatch run ended; fail unless all are done
description:
  - Reads the state store and reports, for the specs a dispatch run took on, how many ended in
    each state and, for every spec that did not complete, its state and reason (for example
    C(S03 blocked, dependency S02 failed)).
  - Fails when any of them did not reach O(done), so C(dispatch.yml) exits non-zero.
  - Adds the tokens and cost of the run's collected attempts, per executor and per spec.
options:
  project:
    description: Project name.
    type: str
    required: true
  run_id:
    description: The dispatch run (counts its attempts per spec).
    type: str
  task_ids:
    description: The specs the run took on.
    type: list
    elements: str
    default: []
  done:
    description:
      - The state every spec must reach for the run to count as complete.
      - C(merged); C(completed) for plain jobs, which have no branch.
      - Default what the run's kind, recorded by M(specfleet_feed), says; C(merged) without one.
    type: str
    choices: [merged, completed]
  db:
    description: As for M(specfleet_feed).
    type: path
attributes:
  check_mode:
    support: full
notes:
  - Runs on the controller; target C(localhost).
author:
  - specfleet contributors
"""

EXAMPLES = r"""
- name: Where every spec of this run ended
  specfleet_report:
    project: clawmarketing
    run_id: "{{ specfleet_fed.run_id }}"
    task_ids: "{{ specfleet_fed.runnable | map(attribute='task_id') }}"
"""

RETURN = r"""
summary:
  description: "One line, e.g. C(demo: 8 specs in this run: 1 blocked, 6 merged, 1 failed)."
  type: str
  returned: always
by_state:
  description: Task ids per state.
  type: dict
  returned: always
attempts:
  description: Attempts this run made, per task id.
  type: dict
  returned: always
usage:
  description:
    - Tokens and cost of the run's collected attempts, C(total) and per executor (C(by_executor))
      and per spec (C(by_task_id)); each entry has C(attempts), C(input_tokens), C(output_tokens),
      C(cost_usd) and C(cost_unknown) (attempts whose cost is not known).
    - Tokens come from each agent CLI's output; the cost from the CLI when it reports one, else
      from the executor's C(prices) in the inventory. C(cost_usd) is null when no attempt's cost
      is known, never a made-up 0.
  type: dict
  returned: when an attempt of the run ran an agent (plain jobs use no model)
msg:
  description:
    - The summary, one line per spec that did not reach O(done), then the run's tokens and
      cost in total, per executor and per spec (when it collected any attempt).
  type: list
  elements: str
  returned: always
"""
