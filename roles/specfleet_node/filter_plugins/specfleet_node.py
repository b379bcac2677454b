# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters of the specfleet_node role."""
from __future__ import annotations

from specfleet.attempt.executors import ExecutorError, chain


def credential_vars(executors, labels=None):
    """The vault variables a node needs: those of the executors it runs and their fallbacks.

    A node without labels runs any executor, so it needs them all. Agents run as the user
    who owns the credentials file, so a node should hold no key it does not use.
    """
    if not isinstance(executors, dict):
        return []
    names = [str(n) for n in (labels or []) if str(n) in executors] if labels else list(executors)
    found = []
    for name in names:
        try:
            runs = chain(executors, name)
        except ExecutorError:
            continue  # the inventory check reports it
        for executor in runs:
            for var in executor["env_from_vars"].values():
                if var not in found:
                    found.append(var)
    return found


class FilterModule:
    def filters(self):
        return {"specfleet_credential_vars": credential_vars}
