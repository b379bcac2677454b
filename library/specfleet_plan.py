# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# The work is done by the action plugin plugins/action/specfleet_plan.py; this file
# carries the documentation.
from __future__ import annotations

DOCUMENTATION = r"""
---
module: specfleet_plan
short_description: Turn a one-line direction into validated atomic specs, or approve pending ones
description:
  - Asks the model behind C(specfleet_plan_endpoint) (an OpenAI-compatible chat-completions endpoint, with
    C(base_url), C(model), C(api_key_var) naming the vault variable with the key, C(timeout) and C(retries))
    to split the direction into specs and an execution plan. The prompt is the Jinja2 template
    C(templates/plan/v1.md.j2).
  - The answer is rendered into spec files and validated with the project's existing specs, by the validator
    used for hand-written specs and by the planner's rules. Those rules are 5-15 minutes per spec, no two specs
    that may run at once modifying one path, every file listed, and no placeholders.
  - An invalid answer is sent back with the exact problems, up to C(rounds) times. Only a valid split is written,
    all files or none, never over an existing file.
  - The specs land in C(specs/<project>/pending/) (or the project with C(into=project)), with C(direction) and
    C(model) in their front matter. The execution plan C(_plan-<stamp>.md) goes beside them, with milestones,
    module boundaries, the shared contract, risks and a Mermaid graph of the dependencies.
  - With C(approve), no model is asked. The named pending specs (or C(all)) move into the project once the
    project with them is valid.
  - The API key is given to the client library only. It is never logged, written or returned.
options:
  project:
    description: The project (folder under the specs root).
    type: str
    required: true
  direction:
    description: The direction, a line or a few.
    type: str
  direction_file:
    description: A file holding the direction, e.g. C(inputs/directions/2026-11-21.md); relative to the repository.
    type: str
  approve:
    description: Pending specs to move into the project, or C(all). No model is asked.
    type: list
    elements: str
  into:
    description: Where valid specs land, C(pending) (a person approves them) or C(project) (straight in).
    type: str
    default: pending
    choices: [pending, project]
  rounds:
    description: How many answers the model may give (the first and the repairs).
    type: int
    default: 3
  max_specs:
    description: The most specs one direction may become.
    type: int
    default: 15
  template:
    description: Another prompt template (Jinja2).
    type: path
  specs_root:
    description: The folder holding one folder per project; default C(specfleet_specs_root), C($SPECFLEET_SPECS), C(specs/).
    type: path
argument_spec_rules:
  mutually_exclusive:
    - [direction, direction_file]
attributes:
  action:
    support: full
  async:
    support: none
  check_mode:
    support: full
    details: Asks the model and validates the split, writes nothing.
  platform:
    platforms: posix
author: specfleet contributors
"""

EXAMPLES = r"""
- name: Plan a direction
  specfleet_plan:
    project: clawmarketing
    direction: "ClawMarketing: batch scheduling, reuse PostService, max 50, auth required, backend only"

- name: Approve everything pending
  specfleet_plan:
    project: clawmarketing
    approve: [all]
"""

RETURN = r"""
specs:
  description: The task ids of the valid split.
  returned: when planning
  type: list
  elements: str
rounds:
  description: How many answers it took.
  returned: when planning
  type: int
files:
  description: The files written (specs and the execution plan).
  returned: when planning, not in check mode
  type: list
  elements: str
approved:
  description: The task ids moved into the project.
  returned: with approve
  type: list
  elements: str
"""
