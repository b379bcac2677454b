# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where slots and path locks are granted, renewed, released and expired: one place.

Everything here runs inside one ``BEGIN IMMEDIATE`` transaction per call, against the
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
"""
from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from .fleet import NodeInfo, choose_node, ordered, ready_and_doomed
from .graph import SpecGraph
from .paths import paths_overlap
from .states import SpecState
from .store import Store, _event, now

DEFAULT_TTL = 90.0
QUARANTINE_BASE = 30.0
QUARANTINE_MAX = 600.0


@dataclass(frozen=True)
class Grant:
    """A spec allowed to start: its slot lease and its attempt."""

    project: str
    task_id: str
    node: str
    slot: int
    attempt: int
    attempt_id: int
    revision: int


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


class LeaseBook:
    """Slot leases, path locks, runs and node health for one dispatch run (``run_id``)."""

    def __init__(self, store: Store, run_id: str | None = None, ttl: float = DEFAULT_TTL):
        self.store = store
        self.ttl = ttl
        self.run_id = run_id or self.new_run_id()

    @staticmethod
    def new_run_id() -> str:
        return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"

    # -- runs and nodes -------------------------------------------------------------------

    def open_run(self, project: str | None, kind: str = "dispatch") -> str:
        stamp = now()
        with self.store.transaction() as db:
            db.execute("INSERT INTO runs (id, project, kind, owner, started_at, heartbeat_at) VALUES (?, ?, ?, ?, ?, ?)",
                       (self.run_id, project, kind, f"{socket.gethostname()}:{os.getpid()}", stamp, stamp))
            _event(db, "run_started", project, run_id=self.run_id, detail={"kind": kind})
        return self.run_id

    def close_run(self, status: str) -> None:
        """End this run. Specs it still holds go back to the queue (their attempt is ``abandoned``)."""
        stamp = now()
        with self.store.transaction() as db:
            held = db.execute("SELECT * FROM slot_leases WHERE run_id = ?", (self.run_id,)).fetchall()
            self._requeue(db, held, "abandoned", f"run {self.run_id} ended ({status}) while it ran", stamp)
            db.execute("UPDATE runs SET ended_at = ?, status = ? WHERE id = ?", (stamp, status, self.run_id))
            db.execute("DELETE FROM slot_leases WHERE run_id = ?", (self.run_id,))
            db.execute("DELETE FROM path_locks WHERE run_id = ?", (self.run_id,))
            _event(db, "run_ended", run_id=self.run_id, detail={"status": status, "abandoned": len(held)})

    def _requeue(self, db, leases, outcome: str, reason: str, stamp: float) -> None:
        """End the attempts behind ``leases`` as an infrastructure outcome and requeue their specs."""
        for lease in leases:
            # A spec's locks go with its lease, whatever their own expiry says.
            db.execute("DELETE FROM path_locks WHERE project = ? AND task_id = ? AND run_id = ?",
                       (lease["project"], lease["task_id"], lease["run_id"]))
            db.execute("UPDATE attempts SET ended_at = ?, outcome = ?, kind = 'infra', reason = ?"
                       " WHERE id = ? AND ended_at IS NULL", (stamp, outcome, reason, lease["attempt_id"]))
            state = db.execute("SELECT state FROM specs WHERE project = ? AND task_id = ?",
                               (lease["project"], lease["task_id"])).fetchone()
            if state is not None and state["state"] == SpecState.RUNNING.value:
                self.store._transition(db, lease["project"], lease["task_id"], SpecState.QUEUED,
                                       reason=f"infrastructure: {reason}", run_id=self.run_id)

    def heartbeat(self) -> None:
        """Prove this run is alive: renew the run and every lease and lock it holds."""
        stamp = now()
        with self.store.transaction() as db:
            db.execute("UPDATE runs SET heartbeat_at = ? WHERE id = ?", (stamp, self.run_id))
            db.execute("UPDATE slot_leases SET expires_at = ? WHERE run_id = ?", (stamp + self.ttl, self.run_id))
            db.execute("UPDATE path_locks SET expires_at = ? WHERE run_id = ?", (stamp + self.ttl, self.run_id))

    def sync_nodes(self, nodes: Sequence[NodeInfo]) -> None:
        with self.store.transaction() as db:
            _upsert_nodes(db, nodes, now())

    def quarantine(self, node: str, reason: str) -> float:
        """Take ``node`` out for an exponentially growing time; return when it may be probed again."""
        stamp = now()
        with self.store.transaction() as db:
            row = db.execute("SELECT failures FROM nodes WHERE name = ?", (node,)).fetchone()
            failures = (row["failures"] if row else 0) + 1
            until = stamp + min(QUARANTINE_BASE * 2 ** (failures - 1), QUARANTINE_MAX)
            db.execute("UPDATE nodes SET health = 'quarantined', health_reason = ?, failures = ?, quarantined_until = ?,"
                       " updated_at = ? WHERE name = ?", (reason, failures, until, stamp, node))
            _event(db, "node_quarantined", run_id=self.run_id, detail={"node": node, "reason": reason,
                                                                       "failures": failures, "until": until})
        return until

    def node_healthy(self, node: str) -> None:
        with self.store.transaction() as db:
            row = db.execute("SELECT health FROM nodes WHERE name = ?", (node,)).fetchone()
            db.execute("UPDATE nodes SET health = 'healthy', health_reason = NULL, failures = 0, quarantined_until = NULL,"
                       " last_seen_at = ?, updated_at = ? WHERE name = ?", (now(), now(), node))
            if row is not None and row["health"] == "quarantined":
                _event(db, "node_readmitted", run_id=self.run_id, detail={"node": node})

    # -- the grant pass -------------------------------------------------------------------

    def grant(self, project: str, nodes: Sequence[NodeInfo], limit: int | None = None,
              only: Collection[str] | None = None) -> PassResult:
        """One scheduling pass for ``project``: block the doomed, start what may start.

        ``only`` limits the starts to the specs this run took on (a dispatch run never
        starts a spec it has no pipeline for); blocking applies to the whole project.

        Reads the whole fleet's leases and the repository's locks, walks the ready specs in
        :func:`~.fleet.ordered` order and grants each the best node with a free slot whose
        locks do not overlap anything held or reserved. Returns what started and why the
        rest waits.
        """
        result = PassResult()
        stamp = now()
        with self.store.transaction() as db:
            result.expired = self._expire(db, stamp)
            _upsert_nodes(db, nodes, stamp)
            project_row = db.execute("SELECT repository FROM projects WHERE name = ?", (project,)).fetchone()
            if project_row is None:
                return result
            repository = project_row["repository"]
            rows = {r["task_id"]: r for r in db.execute("SELECT * FROM specs WHERE project = ?", (project,))}
            states = {t: SpecState(r["state"]) for t, r in rows.items()}
            deps = {t: json.loads(r["depends_on_json"]) for t, r in rows.items()}
            ready, doomed = ready_and_doomed(states, deps)
            for task_id, reason in sorted(doomed.items()):
                self.store._transition(db, project, task_id, SpecState.BLOCKED, reason=reason, run_id=self.run_id)
                result.blocked[task_id] = reason
            graph = SpecGraph(deps, {t: r["estimate_s"] for t, r in rows.items()})
            if only is not None:
                ready = [t for t in ready if t in only]
            ready = ordered(ready, {t: r["priority"] for t, r in rows.items()}, graph)

            used: dict[str, int] = {}
            taken: dict[str, set[int]] = {}
            for lease in db.execute("SELECT node, slot FROM slot_leases"):
                used[lease["node"]] = used.get(lease["node"], 0) + 1
                taken.setdefault(lease["node"], set()).add(lease["slot"])
            held = [(r["path"], r["task_id"], r["project"])
                    for r in db.execute("SELECT path, task_id, project FROM path_locks WHERE repository = ?",
                                        (repository,))]
            reserved: list[tuple[str, str]] = []
            unavailable = self._unavailable(db, stamp)
            for task_id in ready:
                if limit is not None and len(result.granted) >= limit:
                    result.waiting[task_id] = "pass limit reached"
                    continue
                row = rows[task_id]
                modifies = json.loads(row["modifies_json"])
                conflict = _first_conflict(modifies, held, reserved)
                if conflict:
                    result.waiting[task_id] = conflict
                    reserved += [(p, task_id) for p in modifies]
                    continue
                node = choose_node(nodes, used, row["executor"], unavailable)
                if node is None:
                    result.waiting[task_id] = "no free slot on a healthy node that runs " + str(row["executor"])
                    continue
                slot = min(set(range(node.slots)) - taken.get(node.name, set()))
                grant = self._start(db, row, node.name, slot, repository, modifies, stamp)
                used[node.name] = used.get(node.name, 0) + 1
                taken.setdefault(node.name, set()).add(slot)
                held += [(p, task_id, project) for p in modifies]
                result.granted.append(grant)
        return result

    def expire(self) -> int:
        """Reclaim what dead runs hold (see :meth:`_expire`); return how many leases."""
        with self.store.transaction() as db:
            return self._expire(db, now())

    def _expire(self, db, stamp: float) -> int:
        """Leases nobody renewed are void: free them and put their specs back in the queue.

        The attempt ends as ``lost`` (an infrastructure outcome: it does not use one of the
        spec's retries) and the run that stopped renewing is marked ``lost``.
        """
        expired = db.execute("SELECT * FROM slot_leases WHERE expires_at < ?", (stamp,)).fetchall()
        for lease in expired:
            _event(db, "lease_expired", lease["project"], lease["task_id"], self.run_id,
                   detail={"node": lease["node"], "slot": lease["slot"], "owner": lease["run_id"]})
            self._requeue(db, [lease], "lost",
                          f"lease on {lease['node']} expired: run {lease['run_id']} stopped renewing it", stamp)
        db.execute("DELETE FROM slot_leases WHERE expires_at < ?", (stamp,))
        db.execute("DELETE FROM path_locks WHERE expires_at < ?", (stamp,))
        lost = db.execute("SELECT id FROM runs WHERE ended_at IS NULL AND heartbeat_at < ?",
                          (stamp - self.ttl,)).fetchall()
        for run in lost:
            db.execute("UPDATE runs SET ended_at = ?, status = 'lost' WHERE id = ?", (stamp, run["id"]))
            _event(db, "run_lost", run_id=run["id"], detail={"noticed_by": self.run_id})
        return len(expired)

    def _unavailable(self, db, stamp: float) -> set[str]:
        rows = db.execute("SELECT name FROM nodes WHERE enabled = 0 OR (health = 'quarantined' AND"
                          " quarantined_until > ?)", (stamp,))
        return {r["name"] for r in rows}

    def _start(self, db, row, node: str, slot: int, repository: str, modifies: list[str], stamp: float) -> Grant:
        project, task_id = row["project"], row["task_id"]
        number = db.execute("SELECT COALESCE(MAX(number), 0) + 1 FROM attempts WHERE project = ? AND task_id = ?",
                            (project, task_id)).fetchone()[0]
        cursor = db.execute("INSERT INTO attempts (project, task_id, number, revision, run_id, node, slot, started_at)"
                            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            (project, task_id, number, row["revision"], self.run_id, node, slot, stamp))
        attempt_id = cursor.lastrowid
        db.execute("INSERT INTO slot_leases (node, slot, project, task_id, run_id, attempt_id, acquired_at, expires_at)"
                   " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                   (node, slot, project, task_id, self.run_id, attempt_id, stamp, stamp + self.ttl))
        db.executemany("INSERT INTO path_locks (repository, path, project, task_id, run_id, acquired_at, expires_at)"
                       " VALUES (?, ?, ?, ?, ?, ?, ?)",
                       [(repository, p, project, task_id, self.run_id, stamp, stamp + self.ttl) for p in modifies])
        self.store._transition(db, project, task_id, SpecState.RUNNING, reason=None, expect_state=SpecState.QUEUED,
                               expect_version=row["version"], run_id=self.run_id,
                               detail={"node": node, "slot": slot, "attempt": number})
        return Grant(project, task_id, node, slot, number, attempt_id, row["revision"])

    # -- the end of an attempt ------------------------------------------------------------

    def finish(self, grant: Grant, succeeded: bool, reason: str | None = None, infrastructure: bool = False,
               cancelled: bool = False) -> Outcome:
        """Release the slot and locks of ``grant`` and move the spec on.

        Success -> ``completed``. An infrastructure failure (node unreachable, lost) or a
        cancellation by ``stop.yml`` -> back to ``queued`` without using an attempt. A spec
        failure uses an attempt: back to ``queued`` while ``retries`` allow, else
        ``failed``, and every queued descendant becomes ``blocked`` naming it.

        If the lease is no longer this run's (it expired and the spec was requeued or taken
        over), the late result changes nothing and the outcome says ``late``.
        """
        project, task_id = grant.project, grant.task_id
        if succeeded:
            outcome = "succeeded"
        elif cancelled:
            outcome = "cancelled"
        else:
            outcome = "infra_failure" if infrastructure else "spec_failure"
        with self.store.transaction() as db:
            held = db.execute("SELECT 1 FROM slot_leases WHERE project = ? AND task_id = ? AND run_id = ? AND attempt_id = ?",
                              (project, task_id, self.run_id, grant.attempt_id)).fetchone()
            if held is None:
                _event(db, "late_result_ignored", project, task_id, self.run_id,
                       detail={"attempt": grant.attempt, "outcome": outcome})
                row = db.execute("SELECT state FROM specs WHERE project = ? AND task_id = ?", (project, task_id)).fetchone()
                return Outcome(SpecState(row["state"]), late=True)
            db.execute("DELETE FROM slot_leases WHERE project = ? AND task_id = ? AND run_id = ?",
                       (project, task_id, self.run_id))
            db.execute("DELETE FROM path_locks WHERE project = ? AND task_id = ? AND run_id = ?",
                       (project, task_id, self.run_id))
            kind = "cancel" if cancelled else ("infra" if infrastructure else "spec")
            db.execute("UPDATE attempts SET ended_at = ?, outcome = ?, reason = ?, kind = ? WHERE id = ?",
                       (now(), outcome, reason, kind, grant.attempt_id))
            row = db.execute("SELECT * FROM specs WHERE project = ? AND task_id = ?", (project, task_id)).fetchone()
            if succeeded:
                self.store._transition(db, project, task_id, SpecState.COMPLETED, reason=None, run_id=self.run_id)
                return Outcome(SpecState.COMPLETED)
            if cancelled or infrastructure:
                why = f"cancelled: {reason}" if cancelled else f"infrastructure: {reason}"
                self.store._transition(db, project, task_id, SpecState.QUEUED, reason=why, run_id=self.run_id)
                return Outcome(SpecState.QUEUED)
            used = row["attempts_used"] + 1
            if used <= row["retries"]:
                self.store._transition(db, project, task_id, SpecState.QUEUED, reason=reason, run_id=self.run_id,
                                       extra_sets={"attempts_used": used})
                return Outcome(SpecState.QUEUED)
            self.store._transition(db, project, task_id, SpecState.FAILED,
                                   reason=reason or "attempt failed", run_id=self.run_id,
                                   extra_sets={"attempts_used": used})
            blocked = self._block_descendants(db, project, task_id)
            return Outcome(SpecState.FAILED, tuple(blocked))

    # -- stopping -------------------------------------------------------------------------

    def request_stop(self, project: str, mode: str) -> list[dict]:
        """Ask every live run of ``project`` to stop (``drain`` or ``cancel``); return them.

        A later ``cancel`` overrides a ``drain``; a ``drain`` never weakens a ``cancel``.
        """
        if mode not in ("drain", "cancel"):
            raise ValueError(f"stop mode must be drain or cancel, not {mode!r}")
        with self.store.transaction() as db:
            self._expire(db, now())
            runs = [dict(r) for r in db.execute("SELECT id, owner, started_at, heartbeat_at, stop FROM runs"
                                                " WHERE project = ? AND kind = 'dispatch' AND ended_at IS NULL",
                                                (project,))]
            for run in runs:
                new = "cancel" if "cancel" in (mode, run["stop"]) else "drain"
                db.execute("UPDATE runs SET stop = ? WHERE id = ?", (new, run["id"]))
                _event(db, "stop_requested", project, run_id=run["id"], detail={"mode": new})
                run["stop"] = new
        return runs

    def stop_mode(self) -> str | None:
        row = self.store.db.execute("SELECT stop FROM runs WHERE id = ?", (self.run_id,)).fetchone()
        return row["stop"] if row else None

    def _block_descendants(self, db, project: str, task_id: str) -> list[str]:
        rows = db.execute("SELECT task_id, state, depends_on_json FROM specs WHERE project = ?", (project,)).fetchall()
        graph = SpecGraph({r["task_id"]: json.loads(r["depends_on_json"]) for r in rows})
        states = {r["task_id"]: SpecState(r["state"]) for r in rows}
        blocked = []
        for child in sorted(graph.descendants(task_id)):
            if states[child] is SpecState.QUEUED:
                self.store._transition(db, project, child, SpecState.BLOCKED, reason=f"dependency {task_id} failed",
                                       run_id=self.run_id)
                blocked.append(child)
        return blocked


def _upsert_nodes(db, nodes: Sequence[NodeInfo], stamp: float) -> None:
    """Record the inventory's view of each node (slots, enabled, priority); health is kept."""
    db.executemany(
        "INSERT INTO nodes (name, slots, enabled, priority, updated_at) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT(name) DO UPDATE SET slots = excluded.slots, enabled = excluded.enabled,"
        " priority = excluded.priority, updated_at = excluded.updated_at",
        [(n.name, n.slots, int(n.enabled), n.priority, stamp) for n in nodes])


def _first_conflict(modifies: list[str], held: list[tuple[str, str, str]], reserved: list[tuple[str, str]]) -> str | None:
    for mine in modifies:
        for path, owner, project in held:
            if paths_overlap(mine, path):
                return f"lock on {path} held by {owner}" + (f" ({project})" if project else "")
        for path, owner in reserved:
            if paths_overlap(mine, path):
                return f"waits behind {owner}, which needs {path}"
    return None
