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
"""
from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from specfleet.dispatch.policy import NodeInfo, choose_node, ordered, ready_and_doomed
from specfleet.model.graph import SpecGraph
from specfleet.model.states import DEPENDENCY_MERGED, SpecState
from specfleet.node.paths import LockIndex
from specfleet.store import base as store_base
from specfleet.store.base import event as _event
from specfleet.store.core import Store, StoreError

DEFAULT_TTL = 90.0
QUARANTINE_BASE = 30.0
QUARANTINE_MAX = 600.0
OCCUPYING = ("unknown", "running")  # leftover statuses that still use a slot on their node
# A job cannot outlive its timeout: the node's wrapper kills it then (plus the KILL grace).
LEFTOVER_MARGIN = 90.0
# Older tests patch this name; the code reads the one clock, store_base.now().
now = store_base.now


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

    def open_run(self, project: str | None, kind: str = "dispatch", owner_pid: int | None = None,
                 exclusive: bool = True) -> str:
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
        with self.store.transaction() as db:
            self._expire(db, stamp)
            if exclusive and kind == "dispatch" and project is not None:
                live = db.execute("SELECT id, owner, heartbeat_at FROM runs WHERE project = ? AND kind = 'dispatch'"
                                  " AND ended_at IS NULL AND id != ?", (project, self.run_id)).fetchone()
                if live is not None:
                    raise RunConflict(
                        f"project {project} is already being dispatched by run {live['id']} (owner {live['owner']},"
                        f" last heartbeat {max(0.0, stamp - live['heartbeat_at']):.0f} s ago); wait for it to end or"
                        f" stop it with: ansible-playbook playbooks/stop.yml -e project={project}")
            mine = db.execute("SELECT ended_at, status FROM runs WHERE id = ?", (self.run_id,)).fetchone()
            if mine is not None:  # opened earlier in the same play (the feed): take it over if it lives
                if mine["ended_at"] is not None:
                    raise RunConflict(f"run {self.run_id} already ended ({mine['status']}); start dispatch again")
                db.execute("UPDATE runs SET heartbeat_at = ? WHERE id = ?", (stamp, self.run_id))
                return self.run_id
            db.execute("INSERT INTO runs (id, project, kind, owner, started_at, heartbeat_at, owner_host, owner_pid,"
                       " owner_started) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (self.run_id, project, kind, f"{host}:{pid}", stamp, stamp, host, pid, process_started(pid)))
            _event(db, "run_started", project, run_id=self.run_id, detail={"kind": kind, "owner": f"{host}:{pid}"})
        return self.run_id

    def close_run(self, status: str) -> None:
        """End this run. Specs it still holds go back to the queue; their jobs become leftovers."""
        stamp = store_base.now()
        with self.store.transaction() as db:
            if db.execute("SELECT 1 FROM runs WHERE id = ? AND ended_at IS NULL", (self.run_id,)).fetchone() is None:
                return
            held = db.execute("SELECT * FROM slot_leases WHERE run_id = ?", (self.run_id,)).fetchall()
            self._requeue(db, held, "abandoned", f"run {self.run_id} ended ({status}) while it ran", stamp)
            db.execute("UPDATE runs SET ended_at = ?, status = ? WHERE id = ?", (stamp, status, self.run_id))
            db.execute("DELETE FROM path_locks WHERE run_id = ? AND leftover IS NULL", (self.run_id,))
            _event(db, "run_ended", run_id=self.run_id, detail={"status": status, "abandoned": len(held)})

    def _requeue(self, db, leases, outcome: str, reason: str, stamp: float, leftover: bool = True) -> None:
        """End the attempts behind ``leases`` as an infrastructure outcome and requeue their specs.

        With ``leftover`` (the job may still be alive on its node) each lease becomes a
        leftover that keeps the slot and the spec's path locks until it is adopted or
        settled; without it the slot and locks are freed.
        """
        for lease in leases:
            key = (lease["project"], lease["task_id"])
            db.execute("DELETE FROM slot_leases WHERE node = ? AND slot = ?", (lease["node"], lease["slot"]))
            if leftover:
                job = db.execute("SELECT a.run_id, a.started_at, s.timeout_s FROM attempts a JOIN specs s ON"
                                 " s.project = a.project AND s.task_id = a.task_id WHERE a.id = ?",
                                 (lease["attempt_id"],)).fetchone()
                until = job["started_at"] + job["timeout_s"] + LEFTOVER_MARGIN
                db.execute("INSERT OR REPLACE INTO leftovers (attempt_id, node, slot, project, task_id, job_run, status,"
                           " reason, since, until) VALUES (?, ?, ?, ?, ?, ?, 'unknown', ?, ?, ?)",
                           (lease["attempt_id"], lease["node"], lease["slot"], *key, job["run_id"], reason, stamp,
                            until))
                db.execute("UPDATE path_locks SET expires_at = ?, leftover = ? WHERE project = ? AND task_id = ? AND"
                           " run_id = ?", (until, lease["attempt_id"], *key, lease["run_id"]))
                _event(db, "leftover_recorded", *key, self.run_id,
                       detail={"node": lease["node"], "attempt_id": lease["attempt_id"], "reason": reason})
            else:
                db.execute("DELETE FROM path_locks WHERE project = ? AND task_id = ? AND run_id = ?",
                           (*key, lease["run_id"]))
            db.execute("UPDATE attempts SET ended_at = ?, outcome = ?, kind = 'infra', reason = ?"
                       " WHERE id = ? AND ended_at IS NULL", (stamp, outcome, reason, lease["attempt_id"]))
            state = db.execute("SELECT state FROM specs WHERE project = ? AND task_id = ?", key).fetchone()
            if state is not None and state["state"] == SpecState.RUNNING.value:
                self.store._transition(db, *key, SpecState.QUEUED, reason=f"infrastructure: {reason}",
                                       run_id=self.run_id)

    def heartbeat(self) -> None:
        """Prove this run is alive: renew the run and every lease and lock it holds."""
        stamp = store_base.now()
        with self.store.transaction() as db:
            db.execute("UPDATE runs SET heartbeat_at = ? WHERE id = ?", (stamp, self.run_id))
            db.execute("UPDATE slot_leases SET expires_at = ? WHERE run_id = ?", (stamp + self.ttl, self.run_id))
            db.execute("UPDATE path_locks SET expires_at = ? WHERE run_id = ? AND leftover IS NULL",
                       (stamp + self.ttl, self.run_id))

    def sync_nodes(self, nodes: Sequence[NodeInfo]) -> None:
        with self.store.transaction() as db:
            _upsert_nodes(db, nodes, store_base.now())

    def quarantine(self, node: str, reason: str) -> float:
        """Take ``node`` out for an exponentially growing time; return when it may be probed again."""
        stamp = store_base.now()
        with self.store.transaction() as db:
            row = db.execute("SELECT failures FROM nodes WHERE name = ?", (node,)).fetchone()
            failures = (row["failures"] if row else 0) + 1
            until = stamp + min(QUARANTINE_BASE * 2 ** (failures - 1), QUARANTINE_MAX)
            db.execute("UPDATE nodes SET health = 'quarantined', health_reason = ?, failures = ?, quarantined_until = ?,"
                       " updated_at = ? WHERE name = ?", (reason, failures, until, stamp, node))
            _event(db, "node_quarantined", run_id=self.run_id, detail={"node": node, "reason": reason,
                                                                       "failures": failures, "until": until})
        return until

    def node_healthy(self, node: str, seen: bool = False) -> None:
        """``node`` works: end its quarantine (event ``node_readmitted``, ``seen`` says a probe found it)."""
        with self.store.transaction() as db:
            row = db.execute("SELECT health FROM nodes WHERE name = ?", (node,)).fetchone()
            db.execute("UPDATE nodes SET health = 'healthy', health_reason = NULL, failures = 0, quarantined_until = NULL,"
                       " last_seen_at = ?, updated_at = ? WHERE name = ?", (store_base.now(), store_base.now(), node))
            if row is not None and row["health"] == "quarantined":
                _event(db, "node_readmitted", run_id=self.run_id,
                       detail={"node": node, "by": "preflight probe" if seen else "a spec ended normally there"})

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

        Reads the whole fleet's leases and the repository's locks, walks the ready specs in
        :func:`~.fleet.ordered` order and grants each the best node with a free slot whose
        locks do not overlap anything held or reserved. Returns what started and why the
        rest waits.
        """
        result = PassResult()
        stamp = store_base.now()
        with self.store.transaction() as db:
            if _dry_run:  # a preview's attempts name no live run; nothing of it is ever committed
                db.execute("PRAGMA defer_foreign_keys = ON")
            result.expired = self._expire(db, stamp)
            _upsert_nodes(db, nodes, stamp)
            project_row = db.execute("SELECT repository FROM projects WHERE name = ?", (project,)).fetchone()
            if project_row is None:
                if _dry_run:
                    raise _Rollback(result)
                return result
            repository = project_row["repository"]
            rows = {r["task_id"]: r for r in db.execute("SELECT * FROM specs WHERE project = ?", (project,))}
            states = {t: SpecState(r["state"]) for t, r in rows.items()}
            deps = {t: json.loads(r["depends_on_json"]) for t, r in rows.items()}
            ready, doomed = ready_and_doomed(states, deps, done)
            for task_id, reason in sorted(doomed.items()):
                self.store._transition(db, project, task_id, SpecState.BLOCKED, reason=reason, run_id=self.run_id)
                result.blocked[task_id] = reason
            graph = SpecGraph(deps, {t: r["estimate_s"] for t, r in rows.items()})
            if only is not None:
                ready = [t for t in ready if t in only]
            ready = ordered(ready, {t: r["priority"] for t, r in rows.items()}, graph)

            used: dict[str, int] = {}
            taken: dict[str, set[int]] = {}
            occupied = list(db.execute("SELECT node, slot FROM slot_leases"))
            occupied += db.execute(f"SELECT node, slot FROM leftovers WHERE status IN ({_marks(OCCUPYING)})"
                                   " AND until > ?", (*OCCUPYING, stamp))
            for lease in occupied:
                used[lease["node"]] = used.get(lease["node"], 0) + 1
                taken.setdefault(lease["node"], set()).add(lease["slot"])
            held = LockIndex()  # locks held, and those this pass grants: owner (task id, project)
            for r in db.execute("SELECT path, task_id, project FROM path_locks WHERE repository = ?", (repository,)):
                held.add(r["path"], (r["task_id"], r["project"]))
            leftovers: dict[str, list] = {}
            for row in db.execute("SELECT * FROM leftovers WHERE project = ? ORDER BY attempt_id DESC", (project,)):
                leftovers.setdefault(row["task_id"], []).append(row)
            reserved = LockIndex()  # paths of ready specs held back by a lock: owner task id
            unavailable = self._unavailable(db, stamp)
            # Work a dead run left comes first: re-attaching to it (or harvesting it) starts no
            # agent and ends the locks it still holds, which the others may be waiting for.
            ready.sort(key=lambda t: not any(x["node"] not in unavailable for x in leftovers.get(t, [])))
            for task_id in ready:
                if limit is not None and len(result.granted) >= limit:
                    result.waiting[task_id] = "pass limit reached"
                    continue
                row = rows[task_id]
                modifies = json.loads(row["modifies_json"])
                adoptable = [x for x in leftovers.get(task_id, []) if x["node"] not in unavailable]
                # A spec re-attaching to its leftover already holds its locks: a reservation by a
                # spec waiting for those very locks must not hold it back (that waited for the
                # leftover's locks to expire, minutes).
                conflict = _first_conflict(modifies, held, LockIndex() if adoptable else reserved, (task_id, project))
                if conflict:
                    result.waiting[task_id] = conflict
                    for path in modifies:
                        reserved.add(path, task_id)
                    continue
                if adoptable:
                    left = adoptable[0]
                    if left["status"] in OCCUPYING and left["until"] > stamp:
                        slot = left["slot"]
                    else:
                        node = next((n for n in nodes if n.name == left["node"]), None)
                        free = set(range(node.slots if node else 0)) - taken.get(left["node"], set())
                        if not free:
                            result.waiting[task_id] = f"waits for a slot on {left['node']} to harvest its attempt there"
                            continue
                        slot = min(free)
                        used[left["node"]] = used.get(left["node"], 0) + 1
                        taken.setdefault(left["node"], set()).add(slot)
                    grant = self._adopt(db, row, left, slot, repository, modifies, stamp)
                else:
                    node = choose_node(nodes, used, row["executor"], unavailable)
                    if node is None:
                        result.waiting[task_id] = _no_slot(nodes, unavailable, row["executor"])
                        continue
                    slot = min(set(range(node.slots)) - taken.get(node.name, set()))
                    grant = self._start(db, row, node.name, slot, repository, modifies, stamp)
                    used[node.name] = used.get(node.name, 0) + 1
                    taken.setdefault(node.name, set()).add(slot)
                held.drop((task_id, project))
                for path in modifies:
                    held.add(path, (task_id, project))
                result.granted.append(grant)
            if _dry_run:
                raise _Rollback(result)
        return result

    def expire(self) -> int:
        """Reclaim what dead runs hold (see :meth:`_expire`); return how many leases."""
        with self.store.transaction() as db:
            return self._expire(db, store_base.now())

    def _expire(self, db, stamp: float) -> int:
        """Reclaim what dead runs hold: their leases become leftovers and their specs are queued.

        A run is dead when its owner process is gone (same host) or its heartbeat is older
        than ``ttl``; a lease nobody renewed is void either way. The attempt ends as
        ``lost`` (an infrastructure outcome: it does not use one of the spec's retries);
        its job is a leftover that the spec's next grant adopts. Returns how many leases.
        """
        dead = {}
        for run in db.execute("SELECT id, heartbeat_at, owner_host, owner_pid, owner_started FROM runs"
                              " WHERE ended_at IS NULL AND id != ?", (self.run_id,)):
            alive = owner_alive(run["owner_host"], run["owner_pid"], run["owner_started"])
            if alive is False:
                dead[run["id"]] = "its owner process is gone"
            elif run["heartbeat_at"] < stamp - self.ttl:
                dead[run["id"]] = f"no heartbeat for {stamp - run['heartbeat_at']:.0f} s"
        marks = _marks(dead)
        expired = db.execute(f"SELECT * FROM slot_leases WHERE expires_at < ? OR run_id IN ({marks})",
                             (stamp, *dead)).fetchall()
        for lease in expired:
            why = dead.get(lease["run_id"], "it stopped renewing its leases")
            _event(db, "lease_expired", lease["project"], lease["task_id"], self.run_id,
                   detail={"node": lease["node"], "slot": lease["slot"], "owner": lease["run_id"], "why": why})
            self._requeue(db, [lease], "lost", f"run {lease['run_id']} died ({why}) while the job ran on "
                          f"{lease['node']}", stamp)
        db.execute(f"DELETE FROM path_locks WHERE expires_at < ? OR (run_id IN ({marks}) AND leftover IS NULL)",
                   (stamp, *dead))
        for run_id, why in dead.items():
            db.execute("UPDATE runs SET ended_at = ?, status = 'lost' WHERE id = ?", (stamp, run_id))
            _event(db, "run_lost", run_id=run_id, detail={"noticed_by": self.run_id, "why": why})
        return len(expired)

    def _unavailable(self, db, stamp: float) -> set[str]:
        rows = db.execute("SELECT name FROM nodes WHERE enabled = 0 OR disabled_by IS NOT NULL OR"
                          " (health = 'quarantined' AND quarantined_until > ?)", (stamp,))
        return {r["name"] for r in rows}

    def _take(self, db, row, node: str, slot: int, attempt_id: int, repository: str, modifies: list[str],
              stamp: float) -> None:
        """The lease and path locks of one spec (its own older locks, a leftover's, are replaced)."""
        project, task_id = row["project"], row["task_id"]
        db.execute("INSERT INTO slot_leases (node, slot, project, task_id, run_id, attempt_id, acquired_at, expires_at)"
                   " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                   (node, slot, project, task_id, self.run_id, attempt_id, stamp, stamp + self.ttl))
        db.execute("DELETE FROM path_locks WHERE project = ? AND task_id = ?", (project, task_id))
        db.executemany("INSERT INTO path_locks (repository, path, project, task_id, run_id, acquired_at, expires_at)"
                       " VALUES (?, ?, ?, ?, ?, ?, ?)",
                       [(repository, p, project, task_id, self.run_id, stamp, stamp + self.ttl) for p in modifies])

    def _start(self, db, row, node: str, slot: int, repository: str, modifies: list[str], stamp: float) -> Grant:
        project, task_id = row["project"], row["task_id"]
        number = db.execute("SELECT COALESCE(MAX(number), 0) + 1 FROM attempts WHERE project = ? AND task_id = ?",
                            (project, task_id)).fetchone()[0]
        cursor = db.execute("INSERT INTO attempts (project, task_id, number, revision, run_id, node, slot, started_at)"
                            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            (project, task_id, number, row["revision"], self.run_id, node, slot, stamp))
        attempt_id = cursor.lastrowid
        self._take(db, row, node, slot, attempt_id, repository, modifies, stamp)
        self.store._transition(db, project, task_id, SpecState.RUNNING, reason=None, expect_state=SpecState.QUEUED,
                               expect_version=row["version"], run_id=self.run_id,
                               detail={"node": node, "slot": slot, "attempt": number})
        return Grant(project, task_id, node, slot, number, attempt_id, row["revision"], self.run_id)

    def _adopt(self, db, row, leftover, slot: int, repository: str, modifies: list[str], stamp: float) -> Grant:
        """Grant ``row`` its leftover attempt again: re-attach to (or harvest) the job already on the node."""
        project, task_id, node = row["project"], row["task_id"], leftover["node"]
        attempt = db.execute("SELECT number, revision FROM attempts WHERE id = ?", (leftover["attempt_id"],)).fetchone()
        db.execute("DELETE FROM leftovers WHERE attempt_id = ?", (leftover["attempt_id"],))
        db.execute("UPDATE attempts SET ended_at = NULL, outcome = NULL, reason = NULL, kind = 'spec', adopted_by = ?,"
                   " slot = ? WHERE id = ?", (self.run_id, slot, leftover["attempt_id"]))
        self._take(db, row, node, slot, leftover["attempt_id"], repository, modifies, stamp)
        detail = {"node": node, "slot": slot, "attempt": attempt["number"], "adopted_from": leftover["job_run"],
                  "leftover": leftover["status"]}
        _event(db, "attempt_adopted", project, task_id, self.run_id, detail=detail)
        self.store._transition(db, project, task_id, SpecState.RUNNING, reason=None, expect_state=SpecState.QUEUED,
                               expect_version=row["version"], run_id=self.run_id, detail=detail)
        return Grant(project, task_id, node, slot, attempt["number"], leftover["attempt_id"], attempt["revision"],
                     leftover["job_run"], adopted=True)

    # -- leftovers --------------------------------------------------------------------------

    def leftovers(self, node: str | None = None) -> list[dict]:
        query, args = "SELECT l.*, a.number AS attempt, s.state FROM leftovers l JOIN attempts a ON a.id = l.attempt_id" \
                      " JOIN specs s ON s.project = l.project AND s.task_id = l.task_id", []
        if node is not None:
            query += " WHERE l.node = ?"
            args.append(node)
        return [dict(r) for r in self.store.db.execute(query + " ORDER BY l.attempt_id", args)]

    def settle_leftover(self, attempt_id: int, job: str) -> str:
        """Record what the node says of a leftover's job (``running``, ``finished``, ``lost``, ``missing``).

        Returns the decision: ``keep`` (its spec is queued: its next grant adopts it),
        ``kill`` (its spec moved on and the job still runs: the caller kills it, then calls
        again with ``lost``) or ``settled`` (the row is gone; the slot and locks are free).
        """
        with self.store.transaction() as db:
            row = db.execute("SELECT l.*, s.state FROM leftovers l JOIN specs s ON s.project = l.project AND"
                             " s.task_id = l.task_id WHERE l.attempt_id = ?", (attempt_id,)).fetchone()
            if row is None:
                return "settled"
            key = (row["project"], row["task_id"])
            moved_on = row["state"] != SpecState.QUEUED.value
            if job in ("running", "finished") and not moved_on:
                db.execute("UPDATE leftovers SET status = ?, checked_at = ? WHERE attempt_id = ?",
                           (job, store_base.now(), attempt_id))
                if job == "finished":  # nothing changes files there any more
                    db.execute("DELETE FROM path_locks WHERE leftover = ?", (attempt_id,))
                return "keep"
            if job == "running":
                return "kill"
            db.execute("DELETE FROM leftovers WHERE attempt_id = ?", (attempt_id,))
            db.execute("DELETE FROM path_locks WHERE leftover = ?", (attempt_id,))
            _event(db, "leftover_settled", *key, self.run_id,
                   detail={"node": row["node"], "attempt_id": attempt_id, "job": job,
                           "spec": row["state"], "superseded": moved_on})
            return "settled"

    def collect_leftover(self, attempt_id: int, succeeded: bool, reason: str | None = None) -> SpecState | None:
        """A leftover's finished job was collected without a dispatch run (``collect.yml``).

        The attempt ends as it really did: success -> the spec is ``completed`` (ready for
        verify and merge), a spec failure uses an attempt. None when the leftover is gone or
        its spec moved on meanwhile (a dispatch adopted it): nothing changes then.
        """
        with self.store.transaction() as db:
            row = db.execute("SELECT l.*, s.state FROM leftovers l JOIN specs s ON s.project = l.project AND"
                             " s.task_id = l.task_id WHERE l.attempt_id = ?", (attempt_id,)).fetchone()
            if row is None or row["state"] != SpecState.QUEUED.value:
                return None
            key = (row["project"], row["task_id"])
            db.execute("DELETE FROM leftovers WHERE attempt_id = ?", (attempt_id,))
            db.execute("DELETE FROM path_locks WHERE leftover = ?", (attempt_id,))
            db.execute("UPDATE attempts SET ended_at = ?, outcome = ?, reason = ?, kind = 'spec', adopted_by = ?"
                       " WHERE id = ?", (store_base.now(), "succeeded" if succeeded else "spec_failure", reason, self.run_id,
                                         attempt_id))
            detail = {"node": row["node"], "attempt_id": attempt_id, "job_run": row["job_run"], "ok": succeeded}
            _event(db, "leftover_collected", *key, self.run_id, detail=detail)
            if succeeded:
                self.store._transition(db, *key, SpecState.RUNNING, reason=None, run_id=self.run_id, detail=detail)
                self.store._transition(db, *key, SpecState.COMPLETED, reason=None, run_id=self.run_id, detail=detail)
                return SpecState.COMPLETED
            state, _blocked = self.store._spec_failed(db, *key, reason or "attempt failed", self.run_id)
            return state

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
        with self.store.transaction() as db:
            held = db.execute("SELECT 1 FROM slot_leases WHERE project = ? AND task_id = ? AND run_id = ? AND attempt_id = ?",
                              (project, task_id, self.run_id, grant.attempt_id)).fetchone()
            if held is None:
                _event(db, "late_result_ignored", project, task_id, self.run_id,
                       detail={"attempt": grant.attempt, "outcome": outcome})
                row = db.execute("SELECT state FROM specs WHERE project = ? AND task_id = ?", (project, task_id)).fetchone()
                return Outcome(SpecState(row["state"]), late=True)
            if infrastructure and leftover and not cancelled:
                lease = db.execute("SELECT * FROM slot_leases WHERE project = ? AND task_id = ? AND run_id = ?",
                                   (project, task_id, self.run_id)).fetchall()
                self._requeue(db, lease, outcome, reason or "node did not answer", store_base.now())
                return Outcome(SpecState.QUEUED)
            db.execute("DELETE FROM slot_leases WHERE project = ? AND task_id = ? AND run_id = ?",
                       (project, task_id, self.run_id))
            if not (succeeded and keep_locks):
                db.execute("DELETE FROM path_locks WHERE project = ? AND task_id = ? AND run_id = ?",
                           (project, task_id, self.run_id))
            kind = "cancel" if cancelled else ("infra" if infrastructure else "spec")
            db.execute("UPDATE attempts SET ended_at = ?, outcome = ?, reason = ?, kind = ? WHERE id = ?",
                       (store_base.now(), outcome, reason, kind, grant.attempt_id))
            row = db.execute("SELECT * FROM specs WHERE project = ? AND task_id = ?", (project, task_id)).fetchone()
            if succeeded:
                self.store._transition(db, project, task_id, SpecState.COMPLETED, reason=None, run_id=self.run_id)
                return Outcome(SpecState.COMPLETED)
            if cancelled or infrastructure:
                why = f"cancelled: {reason}" if cancelled else f"infrastructure: {reason}"
                self.store._transition(db, project, task_id, SpecState.QUEUED, reason=why, run_id=self.run_id)
                return Outcome(SpecState.QUEUED)
            state, blocked = self.store._spec_failed(db, project, task_id, reason or "attempt failed", self.run_id)
            return Outcome(state, tuple(blocked))

    def release_locks(self, project: str, task_id: str) -> None:
        """Free the path locks this run kept for ``task_id`` after its node part (see :meth:`finish`)."""
        with self.store.transaction() as db:
            db.execute("DELETE FROM path_locks WHERE project = ? AND task_id = ? AND run_id = ? AND leftover IS NULL",
                       (project, task_id, self.run_id))

    # -- stopping -------------------------------------------------------------------------

    def request_stop(self, project: str, mode: str) -> list[dict]:
        """Ask every live run of ``project`` to stop (``drain`` or ``cancel``); return them.

        A later ``cancel`` overrides a ``drain``; a ``drain`` never weakens a ``cancel``.
        """
        if mode not in ("drain", "cancel"):
            raise ValueError(f"stop mode must be drain or cancel, not {mode!r}")
        with self.store.transaction() as db:
            self._expire(db, store_base.now())
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


class _Rollback(Exception):
    """Ends a preview's transaction without committing it."""

    def __init__(self, result: PassResult):
        super().__init__("preview")
        self.result = result


def _no_slot(nodes: Sequence[NodeInfo], unavailable: Collection[str], executor: str | None) -> str:
    """Why no node takes a spec: every capable node is busy, or out (quarantined, taken out)."""
    capable = [n for n in nodes if n.enabled and n.slots > 0 and n.runs(executor)]
    up = [n for n in capable if n.name not in unavailable]
    if capable and not up:
        return (f"every node that runs {executor} is quarantined or taken out ("
                + ", ".join(n.name for n in capable) + ")")
    return f"no free slot on a healthy node that runs {executor}" + (
        f" ({len(up)} busy)" if up else "")


def _upsert_nodes(db, nodes: Sequence[NodeInfo], stamp: float) -> None:
    """Record the inventory's view of each node (slots, enabled, priority, labels); health is kept."""
    db.executemany(
        "INSERT INTO nodes (name, slots, enabled, priority, labels_json, updated_at) VALUES (?, ?, ?, ?, ?, ?)"
        " ON CONFLICT(name) DO UPDATE SET slots = excluded.slots, enabled = excluded.enabled,"
        " priority = excluded.priority, labels_json = excluded.labels_json, updated_at = excluded.updated_at",
        [(n.name, n.slots, int(n.enabled), n.priority, json.dumps(sorted(n.labels)), stamp) for n in nodes])


def _marks(values: Collection) -> str:
    """``?`` placeholders for an ``IN (...)``; one even for no values (``IN (NULL)`` matches nothing)."""
    return ",".join("?" * len(values)) or "NULL"


def _first_conflict(modifies: list[str], held: LockIndex, reserved: LockIndex, me: tuple[str, str]) -> str | None:
    for mine in modifies:
        hit = held.first(mine, skip=me)
        if hit:
            path, (owner, project) = hit
            return f"lock on {path} held by {owner}" + (f" ({project})" if project else "")
        hit = reserved.first(mine)
        if hit:
            return f"waits behind {hit[1]}, which needs {hit[0]}"
    return None
