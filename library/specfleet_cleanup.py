# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# The work is done by the action plugin plugins/action/specfleet_cleanup.py; this file
# carries the documentation.
from __future__ import annotations

DOCUMENTATION = r"""
---
module: specfleet_cleanup
short_description: Delete a project's finished attempt directories on a node, never running or unbrought work
description:
  - Lists the project's run directories and workspaces under the node's work root in one SSH
    command and deletes the pairs of attempts that ended longer ago than O(older_than), that the
    state store knows and no lease or leftover holds, and whose work exists elsewhere (the spec
    is merged, the attempt's commit is in the controller's repository or was pushed, or its
    artifacts were collected).
  - Everything else is kept and listed with the reason, so a failure never deletes the only copy
    of work. The per-project mirror is kept.
options:
  project:
    description: Name of the project.
    type: str
    required: true
  root:
    description: The node's work root (C(specfleet_work_root)).
    type: str
    required: true
  older_than:
    description: Only attempts that ended at least this long ago (e.g. C(7d), C(12h), C(0) for any).
    type: str
    default: 7d
  db:
    description: As for M(specfleet_feed).
    type: path
attributes:
  action:
    support: full
  async:
    support: none
  check_mode:
    support: full
    details: Lists what would be removed and why the rest is kept; deletes nothing.
  platform:
    platforms: posix
author: specfleet contributors
"""

EXAMPLES = r"""
- name: Delete finished attempts older than a week
  specfleet_cleanup:
    project: clawmarketing
    root: "{{ specfleet_work_root | default('~/specfleet') }}"
    older_than: 7d
"""

RETURN = r"""
removed:
  description: Attempts deleted (or, in check mode, that would be), as C(task/attempt-run).
  returned: success
  type: list
  elements: str
kept:
  description: Attempts kept, with the reason.
  returned: success
  type: dict
"""
