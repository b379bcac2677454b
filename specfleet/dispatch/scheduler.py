# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The grant pass's decision, pure: a :class:`Snapshot` of the fleet in, the grants (and why the rest waits) out.

:class:`~specfleet.dispatch.leases.LeaseBook` reads the snapshot from the store, calls
:func:`schedule` and writes the grants, all in one ``BEGIN IMMEDIATE`` transaction; this
module reads and writes nothing, so every rule below is tested with tables of cases
(``tests/unit/test_scheduler.py``).

The walk, over the ready specs in start order (:func:`~.policy.ordered`):

* **Leftovers first**: a spec with a leftover to adopt on an available node moves to the
  front (stable, so the order among them is kept): re-attaching to a dead run's job (or
  harvesting it) starts no agent and ends the locks it still holds, which the others may
  be waiting for.
* **Pass limit**: once ``limit`` specs are granted, the rest wait (``pass limit reached``)
  and reserve nothing.
* **Path locks**: a spec whose ``modifies`` overlaps a lock held (by another spec) or
  granted earlier in this pass waits, and *reserves* its own paths for the rest of the
  pass, so a later spec touching the same files cannot overtake it and keep the lock busy
  forever (starvation). A spec adopting its leftover already holds its locks: reservations
  do not hold it back (that waited for the leftover's own locks to expire, minutes).
* **Adopting**: the leftover's node, the newest leftover first. A leftover whose job may
  still run (``unknown``/``running`` and before ``until``) keeps its slot; otherwise the
  spec needs a free slot on that same node to harvest it there.
* **Starting**: the best node by :func:`~.policy.choose_node` (one home of node
  eligibility), its lowest free slot.
* A granted spec's paths are held for the rest of the pass (its own older locks, a
  leftover's, are replaced).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from specfleet.dispatch.policy import NodeInfo, choose_node, why_no_node
from specfleet.node.paths import LockIndex
from specfleet.store.leases import OCCUPYING


@dataclass(frozen=True)
class ReadySpec:
    """A queued spec whose dependencies are done: what the walk needs of it."""

    task_id: str
    project: str
    modifies: tuple[str, ...] = ()
    executor: str | None = None


@dataclass(frozen=True)
class Leftover:
    """A job a dead run left on a node (see :mod:`specfleet.dispatch.leases`)."""

    attempt_id: int
    node: str
    slot: int
    status: str = "unknown"     # unknown, running or finished
    until: float = 0.0          # its job's timeout has certainly passed by then
    job_run: str = ""


@dataclass(frozen=True)
class Snapshot:
    """What a grant pass sees, read in one transaction."""

    ready: Sequence[ReadySpec]                                   # in start order
    nodes: Sequence[NodeInfo]                                    # the inventory
    unavailable: frozenset[str] = frozenset()                    # disabled, taken out or quarantined
    occupied: Sequence[tuple[str, int]] = ()                     # (node, slot) leased or held by a leftover
    locks: Sequence[tuple[str, str, str]] = ()                   # (path, task id, project) held in the repository
    leftovers: Mapping[str, Sequence[Leftover]] = field(default_factory=dict)  # task id -> newest first
    now: float = 0.0
    limit: int | None = None


@dataclass(frozen=True)
class Placement:
    """A grant decided: ``task_id`` on ``node``/``slot``, adopting ``leftover`` when given."""

    task_id: str
    node: str
    slot: int
    leftover: Leftover | None = None


@dataclass
class Plan:
    grants: list[Placement] = field(default_factory=list)
    waiting: dict[str, str] = field(default_factory=dict)   # task id -> why it waits


@dataclass
class _Occupancy:
    """Slots in use per node, as the pass goes: how many, and which."""

    used: dict[str, int] = field(default_factory=dict)
    taken: dict[str, set[int]] = field(default_factory=dict)

    def add(self, node: str, slot: int) -> None:
        self.used[node] = self.used.get(node, 0) + 1
        self.taken.setdefault(node, set()).add(slot)

    def free(self, slots: int, node: str) -> set[int]:
        return set(range(slots)) - self.taken.get(node, set())


def schedule(snap: Snapshot) -> Plan:
    """One grant pass's decision (see the module docstring for the rules, in order)."""
    plan = Plan()
    slots = _Occupancy()
    for node, slot in snap.occupied:
        slots.add(node, slot)
    held = LockIndex()  # locks held, and those this pass grants: owner (task id, project)
    for path, task_id, project in snap.locks:
        held.add(path, (task_id, project))
    reserved = LockIndex()  # paths of ready specs held back by a lock: owner task id

    def adoptable(spec: ReadySpec) -> list[Leftover]:
        return [x for x in snap.leftovers.get(spec.task_id, ()) if x.node not in snap.unavailable]

    for spec in sorted(snap.ready, key=lambda s: not adoptable(s)):
        if snap.limit is not None and len(plan.grants) >= snap.limit:
            plan.waiting[spec.task_id] = "pass limit reached"
            continue
        left = adoptable(spec)
        conflict = _first_conflict(spec.modifies, held, LockIndex() if left else reserved,
                                   (spec.task_id, spec.project))
        if conflict:
            plan.waiting[spec.task_id] = conflict
            for path in spec.modifies:
                reserved.add(path, spec.task_id)
            continue
        placement = _adopt(spec, left[0], snap, slots) if left else _start(spec, snap, slots)
        if isinstance(placement, str):
            plan.waiting[spec.task_id] = placement
            continue
        held.drop((spec.task_id, spec.project))
        for path in spec.modifies:
            held.add(path, (spec.task_id, spec.project))
        plan.grants.append(placement)
    return plan


def _adopt(spec: ReadySpec, left: Leftover, snap: Snapshot, slots: _Occupancy) -> Placement | str:
    """Re-attach to ``left`` on its own node: its slot if its job may still run, else a free one there."""
    if left.status in OCCUPYING and left.until > snap.now:
        return Placement(spec.task_id, left.node, left.slot, left)
    node = next((n for n in snap.nodes if n.name == left.node), None)
    free = slots.free(node.slots if node else 0, left.node)
    if not free:
        return f"waits for a slot on {left.node} to harvest its attempt there"
    slot = min(free)
    slots.add(left.node, slot)
    return Placement(spec.task_id, left.node, slot, left)


def _start(spec: ReadySpec, snap: Snapshot, slots: _Occupancy) -> Placement | str:
    node = choose_node(snap.nodes, slots.used, spec.executor, snap.unavailable)
    if node is None:
        return why_no_node(snap.nodes, snap.unavailable, spec.executor)
    slot = min(slots.free(node.slots, node.name))
    slots.add(node.name, slot)
    return Placement(spec.task_id, node.name, slot)


def _first_conflict(modifies: Sequence[str], held: LockIndex, reserved: LockIndex, me: tuple[str, str]) -> str | None:
    for mine in modifies:
        hit = held.first(mine, skip=me)
        if hit:
            path, (owner, project) = hit
            return f"lock on {path} held by {owner}" + (f" ({project})" if project else "")
        hit = reserved.first(mine)
        if hit:
            return f"waits behind {hit[1]}, which needs {hit[0]}"
    return None
