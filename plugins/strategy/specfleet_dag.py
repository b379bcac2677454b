# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""specfleet_dag: run spec hosts in dependency order on fleet-wide slots (see DOCUMENTATION).

Order among ready specs, lowest first: ``(priority, -remaining critical path by estimate,
task id)``. Node: healthy, labels allow the executor, lowest ``specfleet_node_priority``,
then most free slots. Both come from ``specfleet.dispatch.policy``; this file holds no policy.

Ansible-core 2.19 warns once per run that non-builtin strategies are deprecated; the
plugin is kept to this one class so that moving off the interface touches one file.
"""
from __future__ import annotations

import os
import queue
import threading
import time

from ansible import constants as C
from ansible._internal._templating._engine import TemplateEngine
from ansible.errors import AnsibleError
from ansible.executor.play_iterator import HostState
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.loader import connection_loader
from ansible.plugins.strategy.free import StrategyModule as FreeStrategy
from ansible.utils.display import Display

from specfleet.dispatch import jobs
from specfleet.dispatch import run as policy
from specfleet.dispatch.policy import NodeInfo
from specfleet.dispatch.watch import NodeWatch, local_argv
from specfleet.model.ending import Ending
from specfleet.store.core import Store, StoreError

DOCUMENTATION = r"""
name: specfleet_dag
short_description: DAG-ordered, slot-limited dispatch of specfleet spec hosts
description:
  - The play's hosts are specs (added by C(add_host) in an earlier play, one per spec, with
    C(specfleet_project), C(specfleet_task_id), C(specfleet_db) and C(specfleet_run_id)); every
    task is delegated to C(specfleet_node), which this strategy sets when it starts the spec.
  - This plugin only decides I(when) a spec host may start and I(on which node). The decisions
    are made by C(specfleet.dispatch.run) (plain Python, unit-tested) against the shared SQLite
    state store; Ansible's C(free) strategy runs the tasks.
  - "Order among specs whose dependencies are completed, lowest first: (priority, -longest
    remaining path of estimates, task id)."
  - A spec starts only when every C(depends_on) spec is completed, a node whose labels allow its
    executor has a free slot (a lease in the database, shared by every run and project) and no
    running spec holds a path lock overlapping its C(modifies).
  - An unreachable spec host is charged to its node, not the spec. The node is quarantined with
    backoff and the spec is queued again without using an attempt.
  - A running spec does not wait in a worker. Once its job has started, the spec is parked
    before its wait step and one watcher per node (a single SSH session running a small
    Python loop there) reports when the job has finished, died, stalled or vanished; only then
    does the wait step run, and it returns at once. If a node's watcher cannot be started
    (a connection other than ssh or local, password authentication), ends or falls silent, its
    specs wait in workers as before. C(-e specfleet_node_watch=false) turns watchers off.
  - A spec whose job outlived an earlier run (controller killed, node cut off) is granted its old
    attempt again on the same node, with C(specfleet_job_run) set to the run id of its directories
    there, so the pipeline re-attaches to the job or harvests its result instead of starting a
    second agent.
author: specfleet contributors
"""

display = Display()
NODE_GROUP = "specfleet_nodes"
COLLECT_ACTIONS = ("specfleet_attempt", "ansible.legacy.specfleet_attempt")
START_ACTIONS = COLLECT_ACTIONS + ("specfleet_job", "ansible.legacy.specfleet_job")
WAIT_ACTIONS = ("specfleet_job", "ansible.legacy.specfleet_job")
SSH_CONNECTIONS = ("ssh", "ansible.builtin.ssh", "ansible.legacy.ssh")
LOCAL_CONNECTIONS = ("local", "ansible.builtin.local", "ansible.legacy.local")
IDLE_WAIT = 0.25    # longest pause of a pass in which nothing happened; a result or a watcher's report ends it
IDLE_SLICE = 0.01   # how often that pause looks for results from workers
WATCH_RETRY_S = 30  # a node whose watcher broke gets a new one after this long


class StrategyModule(FreeStrategy):
    """The ``free`` loop over the spec hosts the dispatcher has started, nothing more."""

    def __init__(self, tqm):
        super().__init__(tqm)
        self._last_failure: dict[str, str] = {}  # host name -> first line of its last failure
        self._infra: dict[str, str] = {}         # host name -> the pipeline says its machinery failed
        self._job_ended: set[str] = set()        # host names whose job is known to be gone (no leftover)
        self._stalled: set[str] = set()          # host names whose job was killed for a stopped heartbeat
        # Node watchers (see DOCUMENTATION): which specs are parked and where their jobs run.
        self._granted: dict[str, str] = {}        # host name -> node of its current grant
        self._run_dirs: dict[str, str] = {}       # host name -> run directory of its started job
        self._parked: dict[str, tuple[str, str]] = {}  # host name -> (node, run directory)
        self._released: set[str] = set()         # host names that wait in a worker this attempt
        self._watches: dict[str, NodeWatch | None] = {}  # node -> its watcher (None: cannot have one)
        self._watch_failed: dict[str, float] = {}  # node -> when its watcher broke
        self._watch_events: queue.SimpleQueue = queue.SimpleQueue()
        self._wake = threading.Event()
        self._watch_on = True
        self.watch_counts = {"parked": 0, "released_to_workers": 0}

    def run(self, iterator, play_context):
        self._iterator = iterator
        hosts = {h.name: h for h in self._inventory.get_hosts(iterator._play.hosts, order=iterator._play.order)}
        self._running: dict[str, object] = {}   # task id -> Host
        self._finished: list = []
        self._play_context = play_context
        self._dispatcher = self._open(hosts)
        status = "failed"
        try:
            result = super().run(iterator, play_context)
            status = "stopped" if self._dispatcher.stop else ("ok" if result == self._tqm.RUN_OK else "failed")
            return result
        except KeyboardInterrupt:  # specfleet (or a person) interrupted ansible-playbook
            status = "interrupted"
            raise
        finally:
            for watch in self._watches.values():
                if watch is not None:
                    watch.close()
            display.vv(f"specfleet_dag: {self.watch_counts['parked']} waits parked on node watchers, "
                       f"{self.watch_counts['released_to_workers']} left to workers")
            self._dispatcher.close(status)
            self._dispatcher.store.close()

    # -- setting up -----------------------------------------------------------------------

    def _open(self, hosts):
        first = next(iter(hosts.values()))
        fixed = {k: first.vars.get(k) for k in ("specfleet_project", "specfleet_db", "specfleet_run_id")}
        missing = [k for k, v in fixed.items() if not v]
        if missing:
            raise AnsibleError(f"host {first.name} is not a spec host (missing {', '.join(missing)}): the "
                               "specfleet_dag strategy runs over the hosts that specfleet_feed's play adds")
        others = sorted({h.vars.get("specfleet_project") for h in hosts.values()} - {fixed["specfleet_project"]})
        if others:
            raise AnsibleError(f"one dispatch play runs one project; found {fixed['specfleet_project']} and {others}")
        nodes, unreachable = self._nodes()
        task_ids = {h.vars["specfleet_task_id"]: h for h in hosts.values()}
        self._by_task = task_ids
        first_vars = self._variable_manager.get_vars(play=self._iterator._play, host=first)
        plain = bool(first_vars.get("specfleet_job_command"))  # plain jobs: no branch to merge
        try:
            self._watch_on = boolean(first_vars.get("specfleet_node_watch", True), strict=True)
        except TypeError as exc:
            raise AnsibleError(f"specfleet_node_watch: {exc}") from exc
        engine = policy.Dispatcher(Store(fixed["specfleet_db"]), fixed["specfleet_project"], task_ids, nodes,
                                   run_id=fixed["specfleet_run_id"], merge=not plain)
        try:
            engine.open(unreachable, owner_pid=os.getpid())
        except StoreError as exc:
            raise AnsibleError(f"dispatch run {fixed['specfleet_run_id']}: {exc}") from exc
        for name, reason in sorted(unreachable.items()):
            display.warning(f"{name} is quarantined: the preflight could not reach it ({reason})")
        return engine

    def _nodes(self):
        """The worker nodes from the inventory, and those the preflight play could not reach."""
        names = self._inventory.get_groups_dict().get(NODE_GROUP, [])
        if not names:
            raise AnsibleError(f"the inventory has no group {NODE_GROUP}: nowhere to run specs")
        nodes, unreachable = [], {}
        for name in names:
            host = self._inventory.get_host(name)
            hostvars = self._variable_manager.get_vars(play=self._iterator._play, host=host)
            try:
                nodes.append(NodeInfo.from_vars(name, {k: hostvars.get(k) for k in (
                    "specfleet_slots", "specfleet_node_priority", "specfleet_executor_labels", "specfleet_enabled")
                    if hostvars.get(k) is not None}))
            except (TypeError, ValueError) as exc:
                raise AnsibleError(f"inventory host {name}: {exc}") from exc
            preflight = hostvars.get("specfleet_preflight") or {}
            if name in self._tqm._unreachable_hosts or preflight.get("unreachable"):
                unreachable[name] = str(preflight.get("msg") or "unreachable").splitlines()[0][:200]
        return nodes, unreachable

    # -- the hook the free loop calls every pass --------------------------------------------

    def get_hosts_left(self, iterator):
        """Spec hosts with work in flight or to queue; blocks while only waiting is left."""
        engine = self._dispatcher
        self._take_watch_events()
        changed = self._collect_ended(iterator)
        while True:
            step = engine.step(force=changed)
            self._drop(iterator, step.dropped)
            for grant in step.start:
                self._start(grant)
            if step.done:
                # Every spec host is finished or dropped by now, so this is non-empty: the
                # free loop sees no work left and ends quietly.
                return self._finished[-1:]
            self._park(iterator)
            if len(self._running) > len(self._parked):
                break
            # Nothing of ours runs in a worker: wait for a watcher's report or slots freed elsewhere.
            self._idle(engine.poll)
            changed = False
        # Pause only when every spec handed to the free loop is busy in a step: a spec whose
        # next step is ready (a wait that just returned, say) must not wait for the pause.
        if not step.start and not changed and all(self._blocked_hosts.get(host.name, False)
                                                  for host in self._running.values() if host.name not in self._parked):
            self._idle(IDLE_WAIT)
        self._grow_workers()
        return [host for host in self._running.values() if host.name not in self._parked]

    def _idle(self, timeout: float) -> None:
        """Pause until a worker's result, a watcher's report or ``timeout``."""
        deadline = time.monotonic() + timeout
        while not self._results and time.monotonic() < deadline:
            if self._wake.wait(IDLE_SLICE):
                break
        self._wake.clear()
        self._take_watch_events()

    # -- node watchers: running specs wait without a worker ------------------------------------

    def _park(self, iterator) -> None:
        """Park every running spec whose next step is waiting for its started job; its node's watcher waits."""
        for host in self._running.values():
            name = host.name
            if (name in self._parked or name in self._released or name not in self._run_dirs
                    or self._blocked_hosts.get(name, False) or name in self._tqm._unreachable_hosts):
                continue
            task = iterator.get_next_task_for_host(host, peek=True)[1]
            if task is None or task.action not in WAIT_ACTIONS or task.args.get("state") != "finished":
                continue
            node, run = self._granted[name], self._run_dirs[name]
            watch = self._watch_for(node) if self._watch_on else None
            stall = self._stall_of(host, task) if watch is not None else None
            if stall is not None and watch.watch(run, stall):
                self._parked[name] = (node, run)
                self.watch_counts["parked"] += 1
            else:
                self._released.add(name)
                self.watch_counts["released_to_workers"] += 1

    def _stall_of(self, host, task) -> float | None:
        """The wait step's stall limit for this spec, templated as its worker would; None if it cannot be."""
        task_vars = self._variable_manager.get_vars(play=self._iterator._play, host=host, task=task,
                                                    _hosts=self._hosts_cache, _hosts_all=self._hosts_cache_all)
        try:
            return float(TemplateEngine(loader=self._loader, variables=task_vars).template(task.args.get("stall", 0)))
        except Exception as exc:  # the worker will report the same problem when it runs the step
            display.vv(f"{host.name}: waits in a worker: its stall limit cannot be templated here ({exc})")
            return None

    def _watch_for(self, node: str) -> NodeWatch | None:
        """The node's working watcher, started if need be; None if it has none now."""
        watch = self._watches.get(node, False)
        if watch is None:
            return None
        if watch and not watch.broken():
            return watch
        if time.monotonic() - self._watch_failed.get(node, float("-inf")) < WATCH_RETRY_S:
            return None
        if watch:
            watch.close()
        argv = self._watch_argv(node)
        try:
            self._watches[node] = NodeWatch(node, argv, self._watch_events, self._wake) if argv else None
        except OSError as exc:  # e.g. the ssh executable cannot be run: try again later
            display.warning(f"{node}: cannot start a node watcher ({exc}); its specs wait in workers")
            self._watches.pop(node, None)
            self._watch_failed[node] = time.monotonic()
            return None
        return self._watches[node]

    def _watch_argv(self, node: str) -> list | None:
        """The command that runs a watcher on ``node`` through its inventory connection; None if unsupported."""
        host = self._inventory.get_host(node)
        variables = self._variable_manager.get_vars(play=self._iterator._play, host=host)
        templar = TemplateEngine(loader=self._loader, variables=variables)
        try:
            kind = str(templar.template(variables.get("ansible_connection") or self._play_context.connection or "ssh"))
            python = str(templar.template(variables.get("ansible_python_interpreter") or "python3"))
            script = jobs.watch_script("python3" if python.startswith("auto") else python)
            if kind in LOCAL_CONNECTIONS:
                return local_argv(script)
            if kind not in SSH_CONNECTIONS:
                display.vv(f"{node}: no node watcher over a {kind} connection; its specs wait in workers")
                return None
            conn = connection_loader.get("ssh", self._play_context)
            conn.set_options(task_keys={"timeout": self._play_context.timeout},
                             var_options=conn._resolve_option_variables(variables, templar))
            if conn.get_option("password") or self._play_context.password:
                display.vv(f"{node}: no node watcher with password authentication; its specs wait in workers")
                return None
            conn.host = conn.get_option("host")
            return conn._build_command(conn.get_option("ssh_executable"), "ssh", conn.host, script)
        except Exception as exc:  # any doubt: the specs wait in workers, as without watchers
            display.warning(f"{node}: cannot start a node watcher ({exc}); its specs wait in workers")
            return None

    def _take_watch_events(self) -> None:
        """Release the parked specs whose jobs stopped running, and all of a node whose watcher broke."""
        for watch in self._watches.values():
            if watch is not None and watch.watched:
                watch.broken()  # notices a silent watcher
        while True:
            try:
                node, run, state = self._watch_events.get_nowait()
            except queue.Empty:
                return
            if state == "broken":
                self._watch_failed[node] = time.monotonic()
                released = [name for name, (where, _run) in self._parked.items() if where == node]
                if released:
                    display.warning(f"{node}: its node watcher stopped ({self._watches[node].broken()}); "
                                    f"{len(released)} running specs wait in workers instead")
            else:
                released = [name for name, where in self._parked.items() if where == (node, run)]
            for name in released:
                del self._parked[name]
                self._released.add(name)

    def _forget_job(self, name: str) -> None:
        """The spec's job was waited on (or the spec ended): nothing of it stays parked or watched."""
        self._run_dirs.pop(name, None)
        self._released.discard(name)
        parked = self._parked.pop(name, None)
        if parked:
            watch = self._watches.get(parked[0])
            if watch is not None:
                watch.forget(parked[1])

    def _start(self, grant) -> None:
        host = self._by_task[grant.task_id]
        for var, value in (("specfleet_node", grant.node), ("specfleet_slot", grant.slot),
                           ("specfleet_attempt", grant.attempt), ("specfleet_job_run", grant.job_run)):
            self._variable_manager.set_host_variable(host.name, var, value)
        self._running[grant.task_id] = host
        self._granted[host.name] = grant.node
        adopted = f", adopting the job run {grant.job_run} left there" if grant.adopted else ""
        if not self._progress_shown():  # the progress callback prints its own start line
            display.display(f"{host.name}: started on {grant.node} (slot {grant.slot}, attempt {grant.attempt}"
                            f"{adopted})", color=C.COLOR_HIGHLIGHT)

    def _progress_shown(self) -> bool:
        """True while the specfleet_progress callback follows this run and prints its state changes itself.

        Asked of the callback object, not its name: ansible-runner loads it under its own
        (awx_display subclasses it), and a callback that found no store to follow is not live.
        """
        return any(getattr(cb, "_live", None) is not None for cb in getattr(self._tqm, "_callback_plugins", ()))

    def _collect_ended(self, iterator) -> bool:
        """Report every started spec whose pipeline has ended; True if any did."""
        ended = False
        for task_id, host in list(self._running.items()):
            name = host.name
            if name in self._parked or self._blocked_hosts.get(name, False):
                continue
            unreachable = name in self._tqm._unreachable_hosts
            if not unreachable and iterator.get_next_task_for_host(host, peek=True)[1] is not None:
                continue
            ended = True
            del self._running[task_id]
            self._forget_job(name)
            failure = self._last_failure.pop(name, "pipeline failed")
            infra = self._infra.pop(name, None)
            job_ended = name in self._job_ended
            stalled = name in self._stalled
            self._job_ended.discard(name)
            self._stalled.discard(name)
            if unreachable:
                ending, reason = Ending.UNREACHABLE, failure
            elif not iterator.is_failed(host):
                ending, reason = Ending.SUCCEEDED, None
            elif stalled:
                ending, reason = Ending.STALLED, infra
            elif infra:
                ending, reason = (Ending.JOB_ENDED if job_ended else Ending.INFRASTRUCTURE), infra
            else:
                ending, reason = Ending.FAILED, failure
            done = self._dispatcher.finish(task_id, ending, reason)
            self._report(host, ending, reason, done)
            if done.requeued:
                self._reset(iterator, host, ending)
            else:
                self._finished.append(host)
        return ended

    def _report(self, host, ending, reason, done) -> None:
        if ending is Ending.SUCCEEDED:
            return
        state = done.outcome.state.value
        line = f"{host.name}: {ending} ({reason}); now {state}"
        if self._progress_shown():  # the state change is the callback's line; keep only what it cannot know
            line = f"{host.name}:"
        if done.quarantined_until:
            line += f"; node quarantined for {done.quarantined_until - time.time():.0f} s"
        if done.outcome.blocked:
            line += f"; blocked: {', '.join(done.outcome.blocked)}"
        if done.gave_up:
            line += f"; {done.gave_up}"
        if done.outcome.late:
            line += "; its lease had expired, so the result was not recorded"
        if line.endswith(":"):
            return
        display.display(line.replace(":;", ":", 1), color=C.COLOR_WARN if done.requeued else C.COLOR_ERROR)

    def _reset(self, iterator, host, ending) -> None:
        """Make a requeued spec host start its pipeline from the top on its next grant."""
        name = host.name
        iterator.set_state_for_host(name, HostState(blocks=iterator._blocks))
        self._tqm._unreachable_hosts.pop(name, None)
        self._tqm._failed_hosts.pop(name, None)
        removed = iterator._play._removed_hosts
        removed[:] = [h for h in removed if h != name]
        # The recap describes the spec's final outcome; the requeue is in the log above.
        self._tqm._stats.decrement("dark" if ending is Ending.UNREACHABLE else "failures", name)

    def _drop(self, iterator, dropped) -> None:
        for task_id, reason in sorted(dropped.items()):
            host = self._by_task[task_id]
            iterator.end_host(host.name)
            self._tqm._stats.increment("skipped", host.name)
            self._finished.append(host)
            display.display(f"{host.name}: not run: {reason}", color=C.COLOR_SKIP)

    def _grow_workers(self) -> None:
        """One worker per running spec (plus one), since each waits in a worker."""
        missing = len(self._running) + 1 - len(self._workers)
        if missing > 0:
            self._workers.extend([None] * missing)

    # -- results: remember what the pipeline said about its own failures --------------------

    def _process_pending_results(self, iterator, one_pass=False, max_passes=None):
        results = super()._process_pending_results(iterator, one_pass, max_passes)
        for result in results:
            data = result._return_data
            if not isinstance(data, dict) or self._collected(result, data):
                continue
            self._note_job(result, data)
            if not (data.get("failed") or data.get("unreachable")):
                continue
            name = result.host.name
            self._last_failure[name] = str(data.get("msg") or "failed").splitlines()[0][:300]
            if result.task.ignore_errors:
                continue
            # A step that hit its task timeout (a hung node) is the node's fault, not the spec's.
            if data.get("specfleet_infrastructure") or data.get("timedout"):
                self._infra[name] = self._last_failure[name]
            if data.get("specfleet_job_ended"):
                self._job_ended.add(name)
            if data.get("specfleet_stalled"):
                self._stalled.add(name)
        return results

    def _note_job(self, result, data: dict) -> None:
        """Remember where a spec's job was started (so it can be parked); forget it once it was waited on."""
        task, name = result.task, result.host.name
        state = task.args.get("state")
        if task.action in WAIT_ACTIONS and state == "finished":
            self._forget_job(name)
        elif (task.action in START_ACTIONS and state == "started" and data.get("run_dir")
              and not (data.get("failed") or data.get("unreachable") or data.get("skipped"))):
            self._run_dirs[name] = data["run_dir"]

    def _collected(self, result, data: dict) -> bool:
        """The spec's branch is back from its node: free the slot while it lands on the controller."""
        task = result.task
        if (task.action not in COLLECT_ACTIONS or task.args.get("state") != "collected" or data.get("failed")
                or data.get("unreachable") or data.get("skipped")):
            return False
        task_id = result.host.vars.get("specfleet_task_id") or result.host.name
        if task_id in self._dispatcher.running:
            self._dispatcher.collected(task_id)
        return True
