# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Leftovers: jobs on nodes that outlived the run that started them, and how each one ends.

A leftover keeps its slot and its spec's path locks (its job may still run). The spec's
next grant adopts it (:mod:`specfleet.dispatch.scheduler`); a leftover whose spec moved
on is settled here when its node answers again (:meth:`LeftoverBook.settle_leftover`), and
``collect.yml`` may collect a finished one without a dispatch run
(:meth:`LeftoverBook.collect_leftover`).
"""
from __future__ import annotations

from specfleet.model.states import SpecState
from specfleet.store import base as store_base
from specfleet.store.core import Store


class LeftoverBook:
    """A mixin of :class:`~specfleet.dispatch.leases.LeaseBook`: ``self.store``, ``self.run_id``."""

    store: Store
    run_id: str

    def leftovers(self, node: str | None = None) -> list[dict]:
        return self.store.leftovers(node)

    def settle_leftover(self, attempt_id: int, job: str) -> str:
        """Record what the node says of a leftover's job (``running``, ``finished``, ``lost``, ``missing``).

        Returns the decision: ``keep`` (its spec is queued: its next grant adopts it),
        ``kill`` (its spec moved on and the job still runs: the caller kills it, then calls
        again with ``lost``) or ``settled`` (the row is gone; the slot and locks are free).
        """
        with self.store.transaction():
            row = self.store.leftover(attempt_id)
            if row is None:
                return "settled"
            moved_on = row["state"] != SpecState.QUEUED.value
            if job in ("running", "finished") and not moved_on:
                self.store.mark_leftover(attempt_id, job, store_base.now())
                return "keep"
            if job == "running":
                return "kill"
            self.store.drop_leftover(attempt_id)
            self.store.record_event("leftover_settled", row["project"], row["task_id"], self.run_id,
                                    detail={"node": row["node"], "attempt_id": attempt_id, "job": job,
                                            "spec": row["state"], "superseded": moved_on})
            return "settled"

    def collect_leftover(self, attempt_id: int, succeeded: bool, reason: str | None = None) -> SpecState | None:
        """A leftover's finished job was collected without a dispatch run (``collect.yml``).

        The attempt ends as it really did: success -> the spec is ``completed`` (ready for
        verify and merge), a spec failure uses an attempt. None when the leftover is gone or
        its spec moved on meanwhile (a dispatch adopted it): nothing changes then.
        """
        with self.store.transaction():
            row = self.store.leftover(attempt_id)
            if row is None or row["state"] != SpecState.QUEUED.value:
                return None
            key = (row["project"], row["task_id"])
            self.store.drop_leftover(attempt_id)
            self.store.end_attempt(attempt_id, store_base.now(), "succeeded" if succeeded else "spec_failure", reason,
                                   "spec", adopted_by=self.run_id)
            detail = {"node": row["node"], "attempt_id": attempt_id, "job_run": row["job_run"], "ok": succeeded}
            self.store.record_event("leftover_collected", *key, self.run_id, detail=detail)
            if succeeded:
                self.store.transition(*key, SpecState.RUNNING, reason=None, run_id=self.run_id, detail=detail)
                self.store.transition(*key, SpecState.COMPLETED, reason=None, run_id=self.run_id, detail=detail)
                return SpecState.COMPLETED
            state, _blocked = self.store.spec_failed(*key, reason or "attempt failed", self.run_id)
            return state
