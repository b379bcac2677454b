# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where slots and path locks are granted, renewed, released and expired: one place.

Every call runs inside one ``BEGIN IMMEDIATE`` transaction, against the
shared database, so the limits hold across every concurrent dispatch run and every
project on the controller, and nothing is counted only in memory:

* A **slot lease** is a row ``(node, slot)`` (primary key, so a slot cannot be leased
  twice) with an owner run and an expiry. The owner renews it with :meth:`LeaseBook.heartbeat`;
  a run that dies stops renewing, and the next grant pass deletes its expired rows.
* A **path lock** is a row per ``modifies`` entry, scoped to the *repository* (two
  projects on one repository share its files). Slot and locks are taken all-or-nothing.
* **Starvation**: a spec that waits because of a lock reserves its own paths for the
  rest of the pass, so a later spec touching the same files cannot overtake it and keep
  the lock busy forever.
* **Leftovers**: a job on a node outlives the run that started it (controller killed,
  Ctrl-C, node cut off). When its lease ends that way the spec goes back to the queue,
  but the job is recorded as a *leftover* that keeps holding its slot and path locks
  (the job may still be running there). The next grant of that spec *adopts* the
  leftover instead of starting a second agent: same node, same attempt, same run
  directory, so the pipeline re-attaches to it or harvests its result. Specs with a
  leftover to adopt come first in a grant pass and are not held back by reservations
  (they already hold their locks; others may be waiting for exactly those). A leftover
  whose spec moved on (it ran elsewhere while the node was cut off) is resolved by
  :meth:`LeaseBook.settle_leftover` when its node answers again. Whatever happens, a
  leftover stops holding its slot and locks when its job's timeout has certainly
  passed (the node's wrapper kills the job then), so no slot is held forever.
* **Dead runs**: a run whose owner process is gone (same controller host: checked by pid
  and process start time) is dead at once; any other run is dead when its heartbeat is
  older than ``ttl``.

Where each part lives: the decision of a grant pass is :func:`~.scheduler.schedule` (pure);
runs (open, heartbeat, expire, stop) are :mod:`.runs`; leftovers :mod:`.leftovers`; the
rows are the store's (:mod:`specfleet.store.leases`). This module holds the lease book
itself: the grant pass, node health, and the end of an attempt.
"""
from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from specfleet.dispatch.leftovers import LeftoverBook
from specfleet.dispatch.policy import NodeInfo, ordered, ready_and_doomed
from specfleet.dispatch.runs import LEFTOVER_MARGIN, RunConflict, RunLifecycle, owner_alive, process_started
from specfleet.dispatch.scheduler import Leftover, Placement, ReadySpec, Snapshot, schedule
from specfleet.model.graph import SpecGraph
from specfleet.model.states import DEPENDENCY_MERGED, SpecState
from specfleet.store import base as store_base
from specfleet.store.core import Store
from specfleet.store.leases import OCCUPYING
from specfleet.store.specs import SpecSummary

DEFAULT_TTL = 90.0
QUARANTINE_BASE = 30.0
QUARANTINE_MAX = 600.0

__all__ = ["DEFAULT_TTL", "LEFTOVER_MARGIN", "OCCUPYING", "QUARANTINE_BASE", "QUARANTINE_MAX", "Grant", "LeaseBook",
           "Outcome", "PassResult", "RunConflict", "owner_alive", "process_started"]


@dataclass(frozen=True)
class Grant:
    """A spec allowed to start: its slot lease and its attempt.

    ``job_run`` is the run id in the attempt's directories on the node: this run's id for
    a new attempt, the original run's id for an adopted one (``adopted``).
    """

    project: str
    task_id: str
    node: str
    slot: int
    attempt: int
    attempt_id: int
    revision: int
    job_run: str = ""
    adopted: bool = False


@dataclass
class PassResult:
    granted: list[Grant] = field(default_factory=list)
    waiting: dict[str, str] = field(default_factory=dict)   # task id -> why it waits
    blocked: dict[str, str] = field(default_factory=dict)   # task id -> why it can never run
    expired: int = 0


@dataclass(frozen=True)
class Outcome:
    state: SpecState
    blocked: tuple[str, ...] = ()
    late: bool = False


class LeaseBook(RunLifecycle, LeftoverBook):
    """Slot leases, path locks, runs and node health for one dispatch run (``run_id``)."""

    def __init__(self, store: Store, run_id: str | None = None, ttl: float = DEFAULT_TTL):
        self.store = store
        self.ttl = ttl
        self.run_id = run_id or self.new_run_id()

    # -- nodes ----------------------------------------------------------------------------

    def sync_nodes(self, nodes: Sequence[NodeInfo]) -> None:
        self.store.record_inventory(nodes, store_base.now())

    def quarantine(self, node: str, reason: str) -> float:
        """Take ``node`` out for an exponentially growing time; return when it may be probed again."""
        stamp = store_base.now()
        with self.store.transaction():
            failures = self.store.node_failures(node) + 1
            until = stamp + min(QUARANTINE_BASE * 2 ** (failures - 1), QUARANTINE_MAX)
            self.store.set_node_quarantined(node, reason, failures, until, stamp, self.run_id)
        return until

    def node_healthy(self, node: str, seen: bool = False) -> None:
        """``node`` works: end its quarantine (event ``node_readmitted``, ``seen`` says a probe found it)."""
        self.store.set_node_healthy(node, "preflight probe" if seen else "a spec ended normally there", self.run_id)

    # -- the grant pass -------------------------------------------------------------------

    def preview(self, project: str, nodes: Sequence[NodeInfo], done: frozenset[SpecState] = DEPENDENCY_MERGED
                ) -> PassResult:
        """What a scheduling pass would do now, and why each ready spec would wait; changes nothing."""
        try:
            self.grant(project, nodes, done=done, _dry_run=True)
        except _Rollback as rolled:
            return rolled.result
        raise AssertionError("unreachable")  # pragma: no cover

    def grant(self, project: str, nodes: Sequence[NodeInfo], limit: int | None = None,
              only: Collection[str] | None = None, done: frozenset[SpecState] = DEPENDENCY_MERGED,
              _dry_run: bool = False) -> PassResult:
        """One scheduling pass for ``project``: block the doomed, start what may start.

        ``only`` limits the starts to the specs this run took on (a dispatch run never
        starts a spec it has no pipeline for); blocking applies to the whole project.
        ``done``: the states in which a dependency lets its dependents start (merged).

        In one transaction: reclaim what dead runs hold, record the inventory, block the
        doomed, read the whole fleet's leases and the repository's locks into a
        :class:`~.scheduler.Snapshot`, let :func:`~.scheduler.schedule` decide, and write
        its grants. Returns what started and why the rest waits.
        """
        result = PassResult()
        stamp = store_base.now()
        with self.store.transaction():
            if _dry_run:  # a preview's attempts name no live run; nothing of it is ever committed
                self.store.defer_foreign_keys()
            result.expired = self._expire(stamp)
            self.store.record_inventory(nodes, stamp)
            repository = self.store.project_repository(project)
            if repository is not None:
                specs = self.store.spec_summaries(project)
                ready = self._block_doomed(project, specs, done, result)
                if only is not None:
                    ready = [t for t in ready if t in only]
                snap = self._snapshot(project, specs, ready, nodes, repository, stamp, limit)
                plan = schedule(snap)
                result.waiting.update(plan.waiting)
                result.granted = [self._write(project, p, repository, stamp) for p in plan.grants]
            if _dry_run:
                raise _Rollback(result)
        return result

    def _block_doomed(self, project: str, specs: dict[str, SpecSummary], done: frozenset[SpecState],
                      result: PassResult) -> list[str]:
        """Block the queued specs that can never run; return the ready ones in start order."""
        deps = {t: s.depends_on for t, s in specs.items()}
        ready, doomed = ready_and_doomed({t: s.state for t, s in specs.items()}, deps, done)
        for task_id, reason in sorted(doomed.items()):
            self.store.transition(project, task_id, SpecState.BLOCKED, reason=reason, run_id=self.run_id)
            result.blocked[task_id] = reason
        graph = SpecGraph(deps, {t: s.estimate_s for t, s in specs.items()})
        return ordered(ready, {t: s.priority for t, s in specs.items()}, graph)

    def _snapshot(self, project: str, specs: dict[str, SpecSummary], ready: list[str], nodes: Sequence[NodeInfo], repository: str,
                  stamp: float, limit: int | None) -> Snapshot:
        leftovers: dict[str, list[Leftover]] = {}
        for row in self.store.leftovers_of(project):
            leftovers.setdefault(row["task_id"], []).append(
                Leftover(row["attempt_id"], row["node"], row["slot"], row["status"], row["until"], row["job_run"]))
        return Snapshot(
            ready=[ReadySpec(t, project, tuple(specs[t].modifies), specs[t].executor) for t in ready],
            nodes=nodes, unavailable=frozenset(self.store.unavailable_nodes(stamp)),
            occupied=self.store.occupied_slots(stamp), locks=self.store.path_locks_in(repository),
            leftovers=leftovers, now=stamp, limit=limit)

    def _write(self, project: str, placement: Placement, repository: str, stamp: float) -> Grant:
        """Write one grant the scheduler decided: a new attempt, or the adoption of a leftover."""
        spec = self.store.spec(project, placement.task_id)  # its revision and version, read in this transaction
        left = placement.leftover
        if left is None:
            number, attempt_id = self.store.start_attempt(spec, placement.node, placement.slot, self.run_id,
                                                          repository, stamp, self.ttl)
            return Grant(spec.project, spec.task_id, placement.node, placement.slot, number, attempt_id,
                         spec.revision, self.run_id)
        number, revision = self.store.adopt_leftover(spec, left, placement.slot, self.run_id, repository, stamp,
                                                     self.ttl)
        return Grant(spec.project, spec.task_id, left.node, placement.slot, number, left.attempt_id, revision,
                     left.job_run, adopted=True)

    # -- the end of an attempt ------------------------------------------------------------

    def finish(self, grant: Grant, succeeded: bool, reason: str | None = None, infrastructure: bool = False,
               cancelled: bool = False, leftover: bool = False, keep_locks: bool = False) -> Outcome:
        """Release the slot and locks of ``grant`` and move the spec on.

        Success -> ``completed``. An infrastructure failure (node unreachable, lost) or a
        cancellation by ``stop.yml`` -> back to ``queued`` without using an attempt; with
        ``leftover`` (the node did not answer, so its job may still run) the job becomes a
        leftover that keeps its slot and locks until adopted or settled. A spec
        failure uses an attempt: back to ``queued`` while ``retries`` allow, else
        ``failed``, and every queued descendant becomes ``blocked`` naming it.

        If the lease is no longer this run's (it expired and the spec was requeued or taken
        over), the late result changes nothing and the outcome says ``late``.

        ``keep_locks`` (success only): the node's part is done, so the slot is freed, but the
        path locks stay with the run until the branch is merged or sent back
        (:meth:`release_locks`), so no other agent edits those files meanwhile.
        """
        project, task_id = grant.project, grant.task_id
        if succeeded:
            outcome = "succeeded"
        elif cancelled:
            outcome = "cancelled"
        else:
            outcome = "infra_failure" if infrastructure else "spec_failure"
        with self.store.transaction():
            if not self.store.lease_held(project, task_id, self.run_id, grant.attempt_id):
                self.store.record_event("late_result_ignored", project, task_id, self.run_id,
                                        detail={"attempt": grant.attempt, "outcome": outcome})
                return Outcome(self.store.spec_state(project, task_id), late=True)
            if infrastructure and leftover and not cancelled:
                lease = self.store.leases_of_spec(project, task_id, self.run_id)
                self._requeue(lease, outcome, reason or "node did not answer", store_base.now())
                return Outcome(SpecState.QUEUED)
            self.store.release_slot(project, task_id, self.run_id, keep_locks=succeeded and keep_locks)
            kind = "cancel" if cancelled else ("infra" if infrastructure else "spec")
            self.store.end_attempt(grant.attempt_id, store_base.now(), outcome, reason, kind)
            if succeeded:
                self.store.transition(project, task_id, SpecState.COMPLETED, reason=None, run_id=self.run_id)
                return Outcome(SpecState.COMPLETED)
            if cancelled or infrastructure:
                why = f"cancelled: {reason}" if cancelled else f"infrastructure: {reason}"
                self.store.transition(project, task_id, SpecState.QUEUED, reason=why, run_id=self.run_id)
                return Outcome(SpecState.QUEUED)
            state, blocked = self.store.spec_failed(project, task_id, reason or "attempt failed", self.run_id)
            return Outcome(state, tuple(blocked))

    def release_locks(self, project: str, task_id: str) -> None:
        """Free the path locks this run kept for ``task_id`` after its node part (see :meth:`finish`)."""
        self.store.release_locks(project, task_id, self.run_id)

class _Rollback(Exception):
    """Ends a preview's transaction without committing it."""

    def __init__(self, result: PassResult):
        super().__init__("preview")
        self.result = result
