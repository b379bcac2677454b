# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# The work is done by the action plugin plugins/action/specfleet_inventory.py; this file
# carries the documentation.
from __future__ import annotations

DOCUMENTATION = r"""
---
module: specfleet_inventory
short_description: Check the fleet described by the inventory
description:
  - Reads the specfleet variables of every host of a group (default C(specfleet_nodes)) and the
    fleet-wide C(specfleet_executors), and fails with every problem found, each naming the
    inventory file, the host and the variable.
  - Checked are C(specfleet_slots) (present, a whole number, 0 or more), C(specfleet_node_priority),
    C(specfleet_enabled), C(specfleet_executor_labels) (each an executor of C(specfleet_executors)),
    C(specfleet_arch), C(specfleet_work_root), C(specfleet_agent_clis), host names that are safe as
    directory names, and two hosts at one address and port.
  - Executor definitions are checked as a dispatch would use them, fallback chains included.
  - Only those variables are read, so a vault variable of another host needs no password here.
options:
  group:
    description: The inventory group of the worker nodes.
    type: str
    default: specfleet_nodes
attributes:
  action:
    support: full
  async:
    support: none
  check_mode:
    support: full
    details: Reads only.
  platform:
    platforms: posix
author: specfleet contributors
"""

EXAMPLES = r"""
- name: Check the inventory
  specfleet_inventory:
"""

RETURN = r"""
nodes:
  description: Each node with its slots, architecture, executor labels and enabled flag.
  returned: always
  type: list
  elements: dict
slots:
  description: The slots of the enabled nodes together.
  returned: always
  type: int
problems:
  description: One line per problem, e.g. C(inventory/production/hosts.yml - node-3 - specfleet_slots is -2).
  returned: always
  type: list
  elements: str
"""
