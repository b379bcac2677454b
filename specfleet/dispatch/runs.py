# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A dispatch run's life in the lease book: opened, kept alive, stopped, closed, or found dead.

* **Dead runs**: a run whose owner process is gone (same controller host: checked by pid
  and process start time) is dead at once; any other run is dead when its heartbeat is
  older than ``ttl``. What a dead run held is reclaimed by the next call that looks
  (:meth:`RunLifecycle._expire`): its leases become leftovers and its specs are queued.
* **Stop requests** (``stop.yml``): ``drain`` lets running attempts end and starts
  nothing; ``cancel`` also ends them. A later ``cancel`` overrides a ``drain``.
"""
from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterable

from specfleet.model.states import RunKind, SpecState
from specfleet.store import base as store_base
from specfleet.store.core import Store, StoreError

# A job cannot outlive its timeout: the node's wrapper kills it then (plus the KILL grace).
LEFTOVER_MARGIN = 90.0


class RunConflict(StoreError):
    """Another live dispatch run already works on the project."""


def process_started(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot), or None if it is gone or a zombie."""
    try:
        with open(f"/proc/{int(pid)}/stat", encoding="ascii", errors="replace") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError, ValueError):
        return None
    if not fields or fields[0] in ("Z", "X"):
        return None
    return fields[19] if len(fields) > 19 else None


def owner_alive(host: str | None, pid: int | None, started: str | None) -> bool | None:
    """Whether a run's owner process lives: True/False on this host, None if it cannot be told."""
    if not host or not pid or host != socket.gethostname():
        return None
    current = process_started(pid)
    if current is None:
        return False
    return started is None or current == started


class RunLifecycle:
    """A mixin of :class:`~specfleet.dispatch.leases.LeaseBook`: ``self.store``, ``self.run_id``, ``self.ttl``."""

    store: Store
    run_id: str
    ttl: float

    @staticmethod
    def new_run_id() -> str:
        return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"

    def open_run(self, project: str | None, kind: str = "dispatch", owner_pid: int | None = None,
                 exclusive: bool = True, work: RunKind | None = None) -> str:
        """Register this run, owned by process ``owner_pid`` (default: this process), or take
        over the live row of the same id.

        An ``exclusive`` dispatch run refuses (:class:`RunConflict`) while another live
        dispatch run works on the same project; dead runs are reclaimed first, so a crashed
        run never blocks. (Runs of one project may share the queue safely, every grant is
        atomic, but two would each wait on the other's specs and report them; one at a
        time is what people expect from a cron job.)
        """
        stamp = store_base.now()
        pid = owner_pid or os.getpid()
        host = socket.gethostname()
        with self.store.transaction():
            self._expire(stamp)
            if exclusive and kind == "dispatch" and project is not None:
                live = next((r for r in self.store.live_dispatch_runs(project) if r["id"] != self.run_id), None)
                if live is not None:
                    raise RunConflict(
                        f"project {project} is already being dispatched by run {live['id']} (owner {live['owner']},"
                        f" last heartbeat {max(0.0, stamp - live['heartbeat_at']):.0f} s ago); wait for it to end or"
                        f" stop it with: ansible-playbook playbooks/stop.yml -e project={project}")
            mine = self.store.run_row(self.run_id)
            if mine is not None:  # opened earlier in the same play (the feed): take it over if it lives
                if mine["ended_at"] is not None:
                    raise RunConflict(f"run {self.run_id} already ended ({mine['status']}); start dispatch again")
                self.store.renew_run(self.run_id, stamp)
                return self.run_id
            self.store.insert_run(self.run_id, project, kind, host, pid, process_started(pid), stamp,
                                  work.value if work else None)
        return self.run_id

    def close_run(self, status: str) -> None:
        """End this run. Specs it still holds go back to the queue; their jobs become leftovers."""
        stamp = store_base.now()
        with self.store.transaction():
            mine = self.store.run_row(self.run_id)
            if mine is None or mine["ended_at"] is not None:
                return
            held = self.store.leases_of_run(self.run_id)
            self._requeue(held, "abandoned", f"run {self.run_id} ended ({status}) while it ran", stamp)
            self.store.end_run(self.run_id, status, stamp, abandoned=len(held))

    def heartbeat(self) -> None:
        """Prove this run is alive: renew the run and every lease and lock it holds."""
        self.store.renew_run(self.run_id, store_base.now(), self.ttl)

    def expire(self) -> int:
        """Reclaim what dead runs hold (see :meth:`_expire`); return how many leases."""
        with self.store.transaction():
            return self._expire(store_base.now())

    def _expire(self, stamp: float) -> int:
        """Reclaim what dead runs hold: their leases become leftovers and their specs are queued.

        Runs inside the caller's transaction. A run is dead when its owner process is gone
        (same host) or its heartbeat is older than ``ttl``; a lease nobody renewed is void
        either way. The attempt ends as ``lost`` (an infrastructure outcome: it does not use
        one of the spec's retries); its job is a leftover that the spec's next grant adopts.
        Returns how many leases.
        """
        dead = {}
        for run in self.store.open_runs_other_than(self.run_id):
            alive = owner_alive(run["owner_host"], run["owner_pid"], run["owner_started"])
            if alive is False:
                dead[run["id"]] = "its owner process is gone"
            elif run["heartbeat_at"] < stamp - self.ttl:
                dead[run["id"]] = f"no heartbeat for {stamp - run['heartbeat_at']:.0f} s"
        expired = self.store.leases_expired(stamp, list(dead))
        for lease in expired:
            why = dead.get(lease["run_id"], "it stopped renewing its leases")
            self.store.record_event("lease_expired", lease["project"], lease["task_id"], self.run_id,
                                    detail={"node": lease["node"], "slot": lease["slot"], "owner": lease["run_id"],
                                            "why": why})
            self._requeue([lease], "lost", f"run {lease['run_id']} died ({why}) while the job ran on "
                          f"{lease['node']}", stamp)
        self.store.drop_expired_locks(stamp, list(dead))
        self.store.mark_runs_lost(dead, stamp, noticed_by=self.run_id)
        return len(expired)

    def _requeue(self, leases: Iterable[dict], outcome: str, reason: str, stamp: float, leftover: bool = True) -> None:
        """End the attempts behind ``leases`` as an infrastructure outcome and requeue their specs.

        With ``leftover`` (the job may still be alive on its node) each lease becomes a
        leftover that keeps the slot and the spec's path locks until it is adopted or
        settled, or until its job's timeout has certainly passed; without it the slot and
        locks are freed. Runs inside the caller's transaction.
        """
        for lease in leases:
            key = (lease["project"], lease["task_id"])
            if leftover:
                job = self.store.job_of_attempt(lease["attempt_id"])
                until = job["started_at"] + job["timeout_s"] + LEFTOVER_MARGIN
                self.store.lease_to_leftover(lease, job["run_id"], reason, stamp, until, self.run_id)
            else:
                self.store.drop_lease(lease)
            self.store.end_attempt(lease["attempt_id"], stamp, outcome, reason, "infra", only_open=True)
            if self.store.spec_state(*key) is SpecState.RUNNING:
                self.store.transition(*key, SpecState.QUEUED, reason=f"infrastructure: {reason}", run_id=self.run_id)

    def request_stop(self, project: str, mode: str) -> list[dict]:
        """Ask every live run of ``project`` to stop (``drain`` or ``cancel``); return them.

        A later ``cancel`` overrides a ``drain``; a ``drain`` never weakens a ``cancel``.
        """
        if mode not in ("drain", "cancel"):
            raise ValueError(f"stop mode must be drain or cancel, not {mode!r}")
        with self.store.transaction():
            self._expire(store_base.now())
            runs = self.store.live_dispatch_runs(project)
            for run in runs:
                new = "cancel" if "cancel" in (mode, run["stop"]) else "drain"
                self.store.set_stop(project, run["id"], new)
                run["stop"] = new
        return runs

    def stop_mode(self) -> str | None:
        return self.store.stop_mode(self.run_id)
