# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# The work is done by the action plugin plugins/action/specfleet_node_state.py; this file
# carries the documentation.
from __future__ import annotations

DOCUMENTATION = r"""
---
module: specfleet_node_state
short_description: Take a worker node out of dispatch, or put it back, in the state store
description:
  - A node taken out is given no new spec by any dispatch until it is put back. Jobs already
    running there are left alone.
  - This is separate from the quarantine a dispatch applies to a node that stops answering, which
    ends by itself. A node taken out stays out until the check that took it out passes.
  - C(by=health) (the health guardian) puts back only what the guardian took out. C(by=bootstrap)
    puts back whatever was taken out, because a bootstrap that passed its post-check has made
    the node ready.
  - C(facts) (what the node reported, e.g. its CLI versions and the names of the keys in its
    credentials file, never values) is stored with the node. The names let a dispatch leave a
    key the controller lacks to the node.
options:
  node:
    description: The node's inventory name.
    type: str
    required: true
  state:
    description: C(disabled) takes the node out, C(enabled) puts it back.
    type: str
    required: true
    choices: [enabled, disabled]
  by:
    description: Which check decides.
    type: str
    required: true
    choices: [bootstrap, health]
  reason:
    description: Why the node is taken out (required with C(state=disabled)).
    type: str
  facts:
    description: What the node reported, kept with its row (no secrets).
    type: dict
  db:
    description: The state database; defaults as for M(specfleet_feed).
    type: path
argument_spec_rules:
  required_if:
    - [state, disabled, [reason]]
attributes:
  action:
    support: full
  async:
    support: none
  check_mode:
    support: full
    details: Reports whether it would change the node's row and writes nothing.
  platform:
    platforms: posix
author: specfleet contributors
"""

EXAMPLES = r"""
- name: Keep node-3 out until its disk is cleaned
  specfleet_node_state:
    node: node-3
    state: disabled
    by: health
    reason: 2.1 GiB free under /srv/specfleet, below 10 GiB
"""

RETURN = r"""
state:
  description: The node's state after the task, C(enabled) or C(disabled).
  returned: success
  type: str
disabled_by:
  description: Which check keeps the node out, if any.
  returned: success
  type: str
reason:
  description: Why the node is out, if it is.
  returned: success
  type: str
"""
