# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One dispatch run of one project, as the strategy plugin sees it: every decision, no Ansible.

The strategy asks :meth:`Dispatcher.step` on every pass of its loop and reports each
spec's end with :meth:`Dispatcher.finish`. Everything else is here:

* **which specs start now and where**: a :meth:`~.leases.LeaseBook.grant` pass against the
  shared database, restricted to the specs this run took on. Passes run at once after a
  spec of this run ends (its slot and locks are free) and otherwise every ``poll``
  seconds, to see slots freed by other runs;
* **which specs will not run in this run** and why: blocked by a failed dependency,
  finished or failed elsewhere, no node could ever run their executor, or a stop request;
* **heartbeats**: the run and its leases are renewed every ``ttl / 3`` seconds;
* **node health**: an unreachable node (or one whose machinery failed: the pipeline
  flags it) is quarantined and the spec goes back to the queue without using an
  attempt; its job, which may still run there, is a leftover that a later grant adopts
  (see :mod:`.leases`). A node is healthy again once a spec on it ends normally or a
  preflight reaches it (``node_readmitted``, written by ``specfleet_harvest``). A job whose heartbeat stopped was killed by
  the pipeline: its spec is queued again without using an attempt, the node stays in. A spec that meets
  ``infra_limit`` such failures in a row is not retried in this run (it stays queued, the
  report names it), so a broken fleet ends the run instead of cycling forever;
* **stop requests** from ``stop.yml``: ``drain`` starts nothing new, ``cancel`` also makes
  the killed specs go back to the queue as ``cancelled`` attempts.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from specfleet.dispatch.leases import Grant, LeaseBook, Outcome
from specfleet.dispatch.policy import NodeInfo, may_run
from specfleet.model.ending import Ending
from specfleet.model.states import DEPENDENCY_COMPLETED, DEPENDENCY_MERGED, UNMERGED_WORK, SpecState
from specfleet.store.core import Store


@dataclass
class Step:
    """What the strategy must do after one pass."""

    start: list[Grant] = field(default_factory=list)
    dropped: dict[str, str] = field(default_factory=dict)  # task id -> why it will not run in this run
    done: bool = False


@dataclass
class Ended:
    """What :meth:`Dispatcher.finish` decided for one spec."""

    outcome: Outcome
    requeued: bool       # the spec is pending again in this run
    quarantined_until: float | None = None
    gave_up: str | None = None  # why this run does not retry it although it is queued


class Dispatcher:
    """Pending and running specs of one run, and the calls into the shared store."""

    def __init__(self, store: Store, project: str, task_ids: Iterable[str], nodes: Sequence[NodeInfo],
                 run_id: str | None = None, ttl: float = 90.0, poll: float = 0.5, infra_limit: int = 3,
                 full_every: float = 5.0, clock: Callable[[], float] = time.monotonic, merge: bool = True):
        self.store = store
        self.project = project
        self.nodes = list(nodes)
        self.book = LeaseBook(store, run_id, ttl)
        self.poll = poll
        self.clock = clock
        self.pending: set[str] = set(task_ids)
        self.running: dict[str, Grant] = {}
        # Specs whose node part succeeded and which are being verified and merged on the
        # controller: their slot is free, their path locks are kept until they land.
        self.landing: dict[str, Grant] = {}
        self.late: dict[str, Outcome] = {}  # collected after this run's lease had expired
        # Without a merge stage (plain jobs) a completed dependency lets dependents start.
        self.done_states = DEPENDENCY_MERGED if merge else DEPENDENCY_COMPLETED
        self.stop: str | None = None
        self.infra_limit = infra_limit
        self.infra_streak: dict[str, int] = {}  # task id -> infrastructure endings in a row
        self.abandoned: set[str] = set()         # still queued, but this run will not run them
        self._due = 0.0          # next time a grant pass is due
        self._beat_due = 0.0     # next heartbeat
        self.full_every = full_every
        self._full_due = 0.0     # next unconditional grant pass
        self._mark: int | None = None  # newest event id seen by the last grant pass
        self._opened = False

    @property
    def run_id(self) -> str:
        return self.book.run_id

    # -- the run --------------------------------------------------------------------------

    def open(self, unreachable_nodes: Mapping[str, str] | None = None, owner_pid: int | None = None) -> None:
        """Register the run (or take over the one the feed opened) and the nodes.

        Nodes the preflight could not reach are quarantined (the preflight re-admits those it
        reached: ``specfleet_harvest``).
        """
        self.book.open_run(self.project, owner_pid=owner_pid)
        self._opened = True
        self.book.sync_nodes(self.nodes)
        for node, reason in sorted((unreachable_nodes or {}).items()):
            self.book.quarantine(node, f"preflight: {reason}")

    def close(self, status: str) -> None:
        if self._opened:
            self.book.close_run(status)
            self._opened = False

    def step(self, force: bool = False) -> Step:
        """One pass: heartbeat when due, then (when due) stop requests, drops and grants."""
        step = Step()
        stamp = self.clock()
        if stamp >= self._beat_due:
            self.book.heartbeat()
            self._beat_due = stamp + self.book.ttl / 3
        if force or stamp >= self._due:
            self._due = stamp + self.poll
            # Skip the grant pass when nothing was written since the last one (every state
            # change, lease, stop request and quarantine writes an event), except for a full
            # pass every ``full_every`` seconds for what time alone changes (expiries).
            mark = self.store.last_event_id()
            if force or mark != self._mark or stamp >= self._full_due:
                self._mark, self._full_due = mark, stamp + self.full_every
                self._pass(step)
        step.done = not self.pending and not self.running and not self.landing
        return step

    def _pass(self, step: Step) -> None:
        self.stop = self.book.stop_mode() or self.stop
        if self.stop:
            for task_id in sorted(self.pending):
                step.dropped[task_id] = f"not started: {self.stop} requested by stop.yml"
            self.pending.clear()
            return
        if not self.pending:
            return
        result = self.book.grant(self.project, self.nodes, only=self.pending, done=self.done_states)
        for grant in result.granted:
            self.pending.discard(grant.task_id)
            self.running[grant.task_id] = grant
            step.start.append(grant)
        self._drop(step)

    def _drop(self, step: Step) -> None:
        """Drop the pending specs that will not run in this run, from one read of their rows.

        * settled meanwhile: blocked, cancelled, or done by another run;
        * no node of the inventory could ever run them (disabled, no slots, labels);
        * orphans: they depend on a spec this run gave up on, so they would wait forever;
        * they depend on a spec that is not merged and that this run is not landing (its
          branch waits in review, or for ``merge.yml``): nothing in this run will merge it.
        """
        if not self.pending:
            return
        rows = self.store.spec_summaries(self.project, sorted(self.pending))
        # Nodes that bootstrap or the health guardian took out stay out until they pass again.
        taken_out = self.store.taken_out_nodes()
        for task_id in sorted(self.pending):
            row = rows.get(task_id)
            if row is None:
                step.dropped[task_id] = "no longer in the state store"
            elif row.state not in (SpecState.QUEUED, SpecState.RUNNING):
                step.dropped[task_id] = f"{row.state.value}" + (f": {row.reason}" if row.reason else "")
            elif not any(may_run(n, row.executor, taken_out) for n in self.nodes):
                step.dropped[task_id] = (f"cannot run: no enabled node with slots runs executor {row.executor}"
                                         if row.executor else "cannot run: no enabled node has slots")
                out = [f"{n.name} ({taken_out[n.name]})" for n in self.nodes if n.name in taken_out]
                if out:
                    step.dropped[task_id] += "; taken out: " + ", ".join(out)
                self.abandoned.add(task_id)
        self.pending.difference_update(step.dropped)
        deps = {t: rows[t].depends_on for t in self.pending}
        needed = sorted({d for ds in deps.values() for d in ds} - self.pending - set(self.running) - set(self.landing))
        if needed:
            stuck = {t: r.state.value for t, r in self.store.spec_summaries(self.project, needed).items()
                     if r.state in UNMERGED_WORK and r.state not in self.done_states}
            for task_id in sorted(self.pending):
                waits = [d for d in deps[task_id] if d in stuck]
                if waits:
                    step.dropped[task_id] = (f"not started: dependency {waits[0]} is {stuck[waits[0]]}, not merged"
                                             " (see playbooks/merge.yml and review.yml)")
                    self.pending.discard(task_id)
                    self.abandoned.add(task_id)
        changed = bool(self.abandoned)
        while changed:
            changed = False
            for task_id in sorted(self.pending):
                missing = [d for d in rows[task_id].depends_on if d in self.abandoned]
                if missing:
                    step.dropped[task_id] = f"not started: dependency {missing[0]} is not run in this run"
                    self.pending.discard(task_id)
                    self.abandoned.add(task_id)
                    changed = True

    # -- the end of one spec --------------------------------------------------------------

    def collected(self, task_id: str) -> Outcome:
        """The node part of ``task_id`` succeeded and its branch is back: free the slot now.

        The spec is ``completed``; its path locks stay until :meth:`finish` reports the end
        of its controller part (verify and merge).
        """
        grant = self.running.pop(task_id)
        self._due = 0.0
        self.book.node_healthy(grant.node)
        self.infra_streak.pop(task_id, None)
        outcome = self.book.finish(grant, True, keep_locks=True)
        self.landing[task_id] = grant
        if outcome.late:  # another run took the spec over: this run lands nothing for it
            self.late[task_id] = outcome
        return outcome

    def _landed(self, task_id: str) -> Ended:
        """The controller part of a collected spec ended; the store says where it went."""
        grant = self.landing.pop(task_id)
        if task_id in self.late:
            return Ended(self.late.pop(task_id), False)
        self._due = 0.0
        self.book.release_locks(grant.project, task_id)
        row = self.store.spec(self.project, task_id)
        state = row.state if row else SpecState.CANCELLED
        requeued = state is SpecState.QUEUED and not self.stop
        if requeued:
            self.pending.add(task_id)
        return Ended(Outcome(state), requeued)

    def finish(self, task_id: str, ending: Ending, reason: str | None = None, leftover: bool | None = None) -> Ended:
        """Record how ``task_id``'s pipeline ended and move it on.

        ``leftover``: the job may still be alive on the node (default: what the ending says).
        For a spec already :meth:`collected`, the end of its verify and merge steps: the
        state those steps left (merged; queued again with feedback; failed) is kept.
        """
        if task_id in self.landing:
            return self._landed(task_id)
        ending = Ending(ending)
        if leftover is None:
            leftover = ending.may_leave_job
        grant = self.running.pop(task_id)
        self._due = 0.0  # a slot is free: the next step grants at once
        until = None
        infra = ending.infrastructure
        if ending.blames_node:
            until = self.book.quarantine(grant.node, f"{ending}: {reason or 'no reason given'}")
        else:
            self.book.node_healthy(grant.node)
        if infra:
            self.infra_streak[task_id] = self.infra_streak.get(task_id, 0) + 1
        else:
            self.infra_streak.pop(task_id, None)
        if ending is not Ending.SUCCEEDED and self.stop != "cancel":
            # stop.yml records a cancel before it kills the jobs: a killed job may end before
            # the next step reads the request, and must not be charged as the spec's failure.
            self.stop = self.book.stop_mode() or self.stop
        if ending is Ending.SUCCEEDED:
            outcome = self.book.finish(grant, True)
        elif self.stop == "cancel":
            outcome = self.book.finish(grant, False, reason or "stopped", cancelled=True)
        else:
            outcome = self.book.finish(grant, False, reason, infrastructure=infra, leftover=leftover)
        requeued = outcome.state is SpecState.QUEUED and not outcome.late and not self.stop
        gave_up = None
        if requeued and self.infra_streak.get(task_id, 0) >= self.infra_limit:
            requeued = False
            gave_up = f"not retried in this run after {self.infra_limit} infrastructure failures in a row; it stays queued"
            self.abandoned.add(task_id)
        elif requeued:
            self.pending.add(task_id)
        return Ended(outcome, requeued, until, gave_up)
