# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# The work is done by the action plugin plugins/action/specfleet_health.py; this file
# carries the documentation.
from __future__ import annotations

DOCUMENTATION = r"""
---
module: specfleet_health
short_description: Check a worker node's health and take it out of dispatch, or put it back
description:
  - Measures the node in one SSH command. It reads the node's clock, the free space under the work
    root, what every configured agent CLI answers to C(--version), the installed runner's version,
    the versions bootstrap recorded in C(node-info.json), and the workspaces older than
    C(stale_after_h) whose job is not running.
  - Problems take the node out of dispatch in the state store, with the problems as the reason.
    They are no answer, free space below C(min_free_gib), a configured CLI that is missing or does
    not answer, clock skew above C(max_skew_s), and, with C(strict_versions), a CLI at another
    version than the inventory pins.
  - A node this check took out is put back when it passes again. A node whose bootstrap failed
    stays out until a bootstrap passes.
  - Warnings are only reported. They are version drift (against the pin or against what bootstrap
    recorded), a runner other than the controller's, a node never bootstrapped, and stale workspaces.
  - A node that cannot be reached is a result of this task, not an unreachable host.
options:
  node:
    description: The node's inventory name.
    type: str
    required: true
  root:
    description: The node's work root (C(specfleet_work_root)).
    type: str
    required: true
  clis:
    description: The agent CLIs the node must have (C(specfleet_agent_clis), C(name), C(version), C(version_args)).
    type: list
    elements: dict
    default: []
  min_free_gib:
    description: Free space under the work root below which the node is unhealthy.
    type: float
    default: 5.0
  max_skew_s:
    description: Clock difference to the controller above which the node is unhealthy (net of the round trip).
    type: float
    default: 30.0
  stale_after_h:
    description: Age after which a workspace with no running job is reported as stale.
    type: float
    default: 24.0
  strict_versions:
    description: A CLI at another version than the inventory pins is a problem, not a warning.
    type: bool
    default: false
  path:
    description: The PATH the CLIs are looked up in (C(specfleet_cli_path)), as bootstrap's post-check does.
    type: str
    default: /usr/local/bin:/usr/bin:/bin
  db:
    description: The state database; defaults as for M(specfleet_feed).
    type: path
attributes:
  action:
    support: full
  async:
    support: none
  check_mode:
    support: full
    details: Measures and judges, changes nothing in the store.
  platform:
    platforms: posix
author: specfleet contributors
"""

EXAMPLES = r"""
- name: Check the node
  specfleet_health:
    node: "{{ inventory_hostname }}"
    root: "{{ specfleet_work_root }}"
    clis: "{{ specfleet_agent_clis | default([]) }}"
"""

RETURN = r"""
healthy:
  description: No problem found.
  returned: success
  type: bool
reachable:
  description: The node answered over SSH.
  returned: success
  type: bool
problems:
  description: What takes the node out.
  returned: success
  type: list
  elements: str
warnings:
  description: What is only reported.
  returned: success
  type: list
  elements: str
line:
  description: The node's row of the health table.
  returned: success
  type: list
  elements: str
free_bytes:
  description: Free bytes under the work root.
  returned: success
  type: int
skew_s:
  description: The node's clock minus the controller's, in seconds.
  returned: success
  type: float
clis:
  description: Each configured CLI's version (null when it did not answer).
  returned: success
  type: dict
"""
