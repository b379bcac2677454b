# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""specfleet's core: plain Python, no Ansible imports, one package per pipeline stage.

``model`` (what a spec, a state, an ending is) → ``plan`` (direction → specs) → ``validate``
→ ``dispatch`` (which spec runs where and when; slot leases and path locks) → ``attempt``
(one attempt, controller side) and ``node`` (what ships to a worker) → ``land`` (verify, merge
queue, review) → ``report``; ``store`` holds every SQL statement, ``ops`` the operator's
commands and node upkeep. The Ansible plugins in ``plugins/`` are thin glue over this package
(their shared code is ``ansible_specfleet``). See the README's Architecture section.
"""
from __future__ import annotations

__version__ = "0.1.0"
