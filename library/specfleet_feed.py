# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# The work is done by the action plugin plugins/action/specfleet_feed.py on the controller;
# this file carries the documentation (as ansible.builtin.add_host does).
from __future__ import annotations

DOCUMENTATION = r"""
---
module: specfleet_feed
short_description: Validate a specfleet project and upsert its specs into the state store
description:
  - Validates the project exactly like M(specfleet_validate). If anything is wrong it fails and
    writes nothing.
  - Otherwise adds new specs as C(queued), records a new revision for every changed spec (with
    the documented policy for specs that already ran), and cancels queued specs whose file was
    removed. Feeding the same files twice changes nothing (C(changed=false)).
options:
  project:
    description: Name of the project, the folder under the specs root.
    type: str
    required: true
  db:
    description:
      - Path of the SQLite state database, outside any git tree.
      - Defaults to C(specfleet_db), then C($SPECFLEET_DB), then C($SPECFLEET_HOME/state.db)
        (C(~/.local/state/specfleet/state.db)).
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
  open_run:
    description:
      - Open the dispatch run (returned as C(run_id)) in the state store, owned by the
        C(ansible-playbook) process, before listing the runnable specs.
      - Fails, naming the live run and how to stop it, while another dispatch run of the same
        project lives. Runs whose owner process died, or whose heartbeat is older than the lease
        time, are reclaimed first; the jobs they left on nodes are adopted by this run.
    type: bool
    default: true
attributes:
  action:
    support: full
  async:
    support: none
  check_mode:
    support: full
    details: Reports what would be added, revised or removed and writes nothing.
  diff_mode:
    support: none
  platform:
    platforms: posix
notes:
  - Runs on the controller; target C(localhost).
author:
  - specfleet contributors
"""

EXAMPLES = r"""
- name: Queue the example project's specs
  specfleet_feed:
    project: clawmarketing
  register: fed
"""

RETURN = r"""
feed:
  description: What changed, by task id.
  returned: when the project is valid
  type: dict
  contains:
    added: {description: Specs queued for the first time., type: list, elements: str}
    revised: {description: Specs whose file changed (a new revision)., type: list, elements: str}
    requeued: {description: Revised specs whose outdated result was sent back to the queue., type: list, elements: str}
    removed: {description: Specs whose file disappeared., type: list, elements: str}
    restored: {description: Specs whose file came back unchanged., type: list, elements: str}
    unchanged: {description: Specs already stored as they are., type: list, elements: str}
    project_changed: {description: Whether project.yml changed., type: bool}
db:
  description: The state database used.
  returned: always
  type: str
run_id:
  description: The dispatch run's id (opened in the store when O(open_run) is true).
  returned: when the project is valid
  type: str
run_kind:
  description:
    - What the run's specs run, decided here once from C(specfleet_job_command) and recorded with
      the run; the strategy and the run's report read it from the store.
  returned: when the project is valid
  type: str
  choices: [agents, jobs]
runnable:
  description: The queued specs this run may start, in order (an empty list in check mode).
  returned: when the project is valid
  type: list
  elements: dict
ok:
  description: Whether the project was valid.
  returned: always
  type: bool
problems:
  description: As for M(specfleet_validate).
  returned: always
  type: list
  elements: dict
valid:
  description: As for M(specfleet_validate).
  returned: always
  type: list
  elements: str
specs:
  description: As for M(specfleet_validate).
  returned: always
  type: dict
summary:
  description: The validation report as text.
  returned: always
  type: str
"""

if __name__ == "__main__":
    raise SystemExit("specfleet_feed runs as an action plugin on the controller; run it from a playbook")
