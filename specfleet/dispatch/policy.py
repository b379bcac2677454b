# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Dispatch policy without side effects: which ready spec goes first, and to which node.

Order among ready specs (lowest tuple first)::

    (priority, -remaining critical path in seconds, task id)

``priority`` is the user's word; among equals the spec with the longest estimate-weighted
chain of dependents starts first, since delaying it delays the whole project; the task
id makes the order total and repeatable.

Node choice for one spec: nodes that are enabled, have slots, are not quarantined and
whose labels allow the spec's executor (a node with no labels runs any executor); of
those, the lowest ``priority`` number, then the most free slots, then the name.
"""
from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from specfleet.model.graph import SpecGraph
from specfleet.model.states import DEPENDENCY_DEAD, DEPENDENCY_MERGED, SpecState


@dataclass(frozen=True)
class NodeInfo:
    """A worker node as the inventory describes it."""

    name: str
    slots: int
    priority: int = 0
    labels: frozenset[str] = field(default_factory=frozenset)
    enabled: bool = True

    def runs(self, executor: str | None) -> bool:
        return not self.labels or executor is None or executor in self.labels

    @classmethod
    def from_row(cls, row: Mapping) -> NodeInfo:
        """Build from the store's record of the inventory (:meth:`~specfleet.store.core.Store.node_inventory`)."""
        return cls(row["name"], row["slots"], row["priority"], frozenset(row["labels"]), bool(row["enabled"]))

    @classmethod
    def from_vars(cls, name: str, hostvars: Mapping) -> NodeInfo:
        """Build from inventory variables (``specfleet_slots``, ``specfleet_node_priority``, ...)."""
        slots = int(hostvars.get("specfleet_slots", 0))
        if slots < 0:
            raise ValueError(f"node {name}: specfleet_slots is {slots}; it must be 0 or more")
        labels = hostvars.get("specfleet_executor_labels") or hostvars.get("specfleet_labels") or ()
        if isinstance(labels, str):
            labels = [labels]
        enabled = hostvars.get("specfleet_enabled", True)
        if isinstance(enabled, str):
            enabled = enabled.strip().lower() in ("1", "true", "yes", "on")
        return cls(name, slots, int(hostvars.get("specfleet_node_priority", 0)), frozenset(map(str, labels)),
                   bool(enabled))


def order_key(priority: int, remaining: int, task_id: str) -> tuple[int, int, str]:
    return (priority, -remaining, task_id)


def ready_and_doomed(states: Mapping[str, SpecState], deps: Mapping[str, Sequence[str]],
                     done: frozenset[SpecState] = DEPENDENCY_MERGED) -> tuple[list[str], dict[str, str]]:
    """Queued specs whose dependencies are all done, and queued specs that never can run.

    A spec is doomed when any dependency is failed, cancelled or blocked (or missing); the
    reason names the first such dependency, e.g. ``dependency S01 failed``.
    """
    ready, doomed = [], {}
    for task_id, state in states.items():
        if state is not SpecState.QUEUED:
            continue
        reason = None
        for dep in deps.get(task_id, ()):
            dep_state = states.get(dep)
            if dep_state is None:
                reason = f"dependency {dep} does not exist"
            elif dep_state in DEPENDENCY_DEAD:
                reason = f"dependency {dep} {dep_state.value}"
            else:
                continue
            break
        if reason:
            doomed[task_id] = reason
        elif all(states.get(dep) in done for dep in deps.get(task_id, ())):
            ready.append(task_id)
    return ready, doomed


def ordered(ready: Iterable[str], priorities: Mapping[str, int], graph: SpecGraph) -> list[str]:
    remaining = graph.remaining_path()
    return sorted(ready, key=lambda t: order_key(priorities[t], remaining.get(t, 0), t))


def may_run(node: NodeInfo, executor: str | None, unavailable: Collection[str] = ()) -> bool:
    """Whether ``node`` may take a spec with ``executor`` at all (busy or not): the one home of node eligibility.

    Enabled in the inventory, with slots, not in ``unavailable`` (quarantined, or taken
    out by bootstrap or the health guardian), and its labels allow the executor.
    """
    return node.enabled and node.slots > 0 and node.name not in unavailable and node.runs(executor)


def choose_node(nodes: Iterable[NodeInfo], used: Mapping[str, int], executor: str | None,
                unavailable: Iterable[str] = ()) -> NodeInfo | None:
    """The best node with a free slot for a spec with ``executor`` (see module docstring)."""
    skip = set(unavailable)
    best = None
    for node in nodes:
        if not may_run(node, executor, skip):
            continue
        free = node.slots - used.get(node.name, 0)
        if free <= 0:
            continue
        key = (node.priority, -free, node.name)
        if best is None or key < best[0]:
            best = (key, node)
    return best[1] if best else None


def why_no_node(nodes: Sequence[NodeInfo], unavailable: Collection[str], executor: str | None) -> str:
    """Why :func:`choose_node` found no node: every capable node is busy, or out (quarantined, taken out)."""
    capable = [n for n in nodes if may_run(n, executor)]
    up = [n for n in capable if n.name not in unavailable]
    if capable and not up:
        return (f"every node that runs {executor} is quarantined or taken out ("
                + ", ".join(n.name for n in capable) + ")")
    return f"no free slot on a healthy node that runs {executor}" + (
        f" ({len(up)} busy)" if up else "")
