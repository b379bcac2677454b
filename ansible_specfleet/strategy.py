# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The specfleet_dag strategy's logic: Ansible's ``free`` loop over the specs the core starts.

The plugin file (``plugins/strategy/specfleet_dag.py``) is its documentation plus
``class StrategyModule(DagStrategyMixin, FreeStrategy)``, as mitogen extends strategies.
This module holds the mixin; the private ansible-core state it touches is in
:mod:`ansible_specfleet.internals`, node watchers in :mod:`ansible_specfleet.watchers`, and
what a task result says about its spec in :mod:`ansible_specfleet.results`.

How it works. The free loop asks :meth:`DagStrategyMixin.get_hosts_left` for hosts before
every pass. That hook (1) reports every started spec whose pipeline has ended to the
:class:`~specfleet.dispatch.run.Dispatcher` (which records the ending, frees the slot,
requeues or charges the spec), then (2) runs :func:`run_step`: the dispatcher grants slots to
ready specs, the hook sets their node variables and hands them to the free loop. Order and
placement are the core's (``specfleet.dispatch.policy``); this module holds no policy.
While every started spec is parked on a node watcher, the hook waits inside
:func:`run_step` (for a watcher's report, or slots freed by another run) instead of
returning, so the free loop never spins.

Without a custom strategy (ansible-core deprecated third-party strategy plugins in 2.19,
ansible/ansible#84725, with no replacement planned): :func:`run_step` needs only a
dispatcher and a :class:`StepHooks` object, nothing of the strategy. A builtin ``free`` play
over the spec hosts could start each spec's pipeline with one task (an action plugin)
that blocks until the core grants that spec a slot: one controller-side loop (a thread, or
the first such task) calls :func:`run_step` with hooks whose ``start`` wakes the waiting
task of the granted spec and hands it its node, and whose ``drop`` ends the dropped specs'
tasks; the pipeline's last task reports the spec's :class:`~specfleet.model.ending.Ending`
(:func:`ansible_specfleet.results.ending_of`) to ``Dispatcher.finish``. The core is
unchanged by that path; only the hooks differ.
"""
from __future__ import annotations

import os
import time
from functools import partial
from typing import Protocol

from ansible import constants as C
from ansible.errors import AnsibleError
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.utils.display import Display

from ansible_specfleet import internals, results
from ansible_specfleet.watchers import NodeWatchers
from specfleet.dispatch import jobs
from specfleet.dispatch.policy import NodeInfo
from specfleet.dispatch.run import Dispatcher, Step
from specfleet.dispatch.watch import local_argv
from specfleet.model.ending import Ending
from specfleet.model.states import RunKind
from specfleet.store.core import Store, StoreError

display = Display()
NODE_GROUP = "specfleet_nodes"
SSH_CONNECTIONS = ("ssh", "ansible.builtin.ssh", "ansible.legacy.ssh")
LOCAL_CONNECTIONS = ("local", "ansible.builtin.local", "ansible.legacy.local")
IDLE_WAIT = 0.25    # longest pause of a pass in which nothing happened; a result or a watcher's report ends it
IDLE_SLICE = 0.01   # how often that pause looks for results from workers
# Play keywords the strategy does not honour: node slots decide how many specs run at once.
UNHONOURED = ("serial", "throttle")


class StepHooks(Protocol):
    """What :func:`run_step` asks of whoever runs the specs (the strategy, or a later ``free`` play)."""

    def drop(self, dropped: dict[str, str]) -> None: ...   # task id -> why it will not run
    def start(self, grant) -> None: ...                    # run this granted spec on grant.node
    def settle(self) -> bool: ...                          # park what can wait; True if a worker has work
    def idle(self, timeout: float) -> None: ...            # wait for a result or a report, at most timeout


def run_step(dispatcher: Dispatcher, hooks: StepHooks, changed: bool) -> Step:
    """Grant, start and drop specs until something runs in a worker or the run is done.

    ``changed``: a spec ended since the last call (the dispatcher then looks at the store
    at once). Waits (``hooks.idle`` for ``dispatcher.poll``) while nothing is left to a
    worker. Returns the last :class:`Step` (``done`` once every spec is finished or dropped).
    """
    while True:
        step = dispatcher.step(force=changed)
        hooks.drop(step.dropped)
        for grant in step.start:
            hooks.start(grant)
        if step.done or hooks.settle():
            return step
        # Nothing of ours runs in a worker: wait for a watcher's report or slots freed elsewhere.
        hooks.idle(dispatcher.poll)
        changed = False


class DagStrategyMixin:
    """Mixed in before ansible's ``free`` ``StrategyModule``; see the module docstring."""

    def __init__(self, tqm):
        super().__init__(tqm)
        self._failure: dict[str, str] = {}      # host name -> first line of its last failure
        self._ending: dict[str, Ending] = {}    # host name -> what its failed step said about it
        self._granted: dict[str, str] = {}      # host name -> node of its current grant
        self._watchers = NodeWatchers(self._watch_argv)

    def run(self, iterator, play_context):
        self._iterator = iterator
        self._play_context = play_context
        play = internals.play_of(iterator)
        for keyword in UNHONOURED:
            if getattr(play, keyword, None):
                display.warning(f"Using {keyword} with the specfleet_dag strategy is not supported: "
                                "node slots decide how many specs run at once")
        hosts = {h.name: h for h in self._inventory.get_hosts(play.hosts, order=play.order)}
        self._running: dict[str, object] = {}   # task id -> Host
        self._finished: list = []
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
            self._watchers.close()
            self._dispatcher.close(status)
            self._dispatcher.store.close()

    # -- setting up -----------------------------------------------------------------------

    def _vars(self, host, **kwargs) -> dict:
        return self._variable_manager.get_vars(play=internals.play_of(self._iterator), host=host, **kwargs)

    def _open(self, hosts) -> Dispatcher:
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
        self._by_task = {h.vars["specfleet_task_id"]: h for h in hosts.values()}
        first_vars = self._vars(first)
        try:
            self._watchers.enabled = boolean(first_vars.get("specfleet_node_watch", True), strict=True)
        except TypeError as exc:
            raise AnsibleError(f"specfleet_node_watch: {exc}") from exc
        store = Store(fixed["specfleet_db"])
        kind = store.run_kind(fixed["specfleet_run_id"]) or RunKind.AGENTS   # recorded by the feed
        engine = Dispatcher(store, fixed["specfleet_project"], self._by_task, nodes,
                            run_id=fixed["specfleet_run_id"], merge=kind.lands)
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
            hostvars = self._vars(self._inventory.get_host(name))
            try:
                nodes.append(NodeInfo.from_vars(name, {k: hostvars.get(k) for k in (
                    "specfleet_slots", "specfleet_node_priority", "specfleet_executor_labels", "specfleet_enabled")
                    if hostvars.get(k) is not None}))
            except (TypeError, ValueError) as exc:
                raise AnsibleError(f"inventory host {name}: {exc}") from exc
            preflight = hostvars.get("specfleet_preflight") or {}
            if name in internals.unreachable_hosts(self._tqm) or preflight.get("unreachable"):
                unreachable[name] = str(preflight.get("msg") or "unreachable").splitlines()[0][:200]
        return nodes, unreachable

    # -- the hook the free loop calls every pass, and run_step's hooks ----------------------

    def get_hosts_left(self, iterator):
        """Spec hosts with work in flight or to queue; blocks while only waiting is left."""
        self._watchers.take_events()
        changed = self._report_ended(iterator)
        step = run_step(self._dispatcher, self, changed)
        if step.done:
            # Every spec host is finished or dropped by now, so this is non-empty: the
            # free loop sees no work left and ends quietly.
            return self._finished[-1:]
        # Pause only when every spec handed to the free loop is busy in a step: a spec whose
        # next step is ready (a wait that just returned, say) must not wait for the pause.
        if not step.start and not changed and all(internals.blocked(self, host.name) for host in self._in_workers()):
            self.idle(IDLE_WAIT)
        # Every running spec may wait in a worker: one worker each (plus one).
        internals.grow_workers(self, len(self._running) + 1)
        return self._in_workers()  # after the pause: it may have released parked specs

    def _in_workers(self) -> list:
        return [host for host in self._running.values() if host.name not in self._watchers.parked]

    def idle(self, timeout: float) -> None:
        """Pause until a worker's result, a watcher's report or ``timeout``."""
        deadline = time.monotonic() + timeout
        while not internals.results_waiting(self) and time.monotonic() < deadline:
            if self._watchers.wake.wait(IDLE_SLICE):
                break
        self._watchers.wake.clear()
        self._watchers.take_events()

    def start(self, grant) -> None:
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

    def drop(self, dropped: dict[str, str]) -> None:
        for task_id, reason in sorted(dropped.items()):
            host = self._by_task[task_id]
            self._iterator.end_host(host.name)
            internals.count_skipped(self._tqm, host.name)
            self._finished.append(host)
            display.display(f"{host.name}: not run: {reason}", color=C.COLOR_SKIP)

    def settle(self) -> bool:
        """Park every running spec whose next step waits for its started job; True if any is left to a worker."""
        for host in self._running.values():
            name = host.name
            if (not self._watchers.may_park(name) or internals.blocked(self, name)
                    or name in internals.unreachable_hosts(self._tqm)):
                continue
            task = self._iterator.get_next_task_for_host(host, peek=True)[1]
            if task is not None and results.waits_for_job(task):
                self._watchers.park(name, self._granted[name], partial(self._stall_of, host, task))
        return len(self._running) > len(self._watchers.parked)

    # -- node watchers --------------------------------------------------------------------

    def _stall_of(self, host, task) -> float | None:
        """The wait step's stall limit for this spec, templated as its worker would; None if it cannot be."""
        task_vars = self._vars(host, task=task, **internals.hosts_caches(self))
        try:
            return float(internals.templar_for(self._loader, task_vars).template(task.args.get("stall", 0)))
        except Exception as exc:  # the worker will report the same problem when it runs the step
            display.vv(f"{host.name}: waits in a worker: its stall limit cannot be templated here ({exc})")
            return None

    def _watch_argv(self, node: str) -> list | None:
        """The command that runs a watcher on ``node`` through its inventory connection; None if unsupported."""
        variables = self._vars(self._inventory.get_host(node))
        try:
            templar = internals.templar_for(self._loader, variables)
            kind = str(templar.template(variables.get("ansible_connection") or self._play_context.connection or "ssh"))
            python = str(templar.template(variables.get("ansible_python_interpreter") or "python3"))
            script = jobs.watch_script("python3" if python.startswith("auto") else python)
            if kind in LOCAL_CONNECTIONS:
                return local_argv(script)
            if kind not in SSH_CONNECTIONS:
                display.vv(f"{node}: no node watcher over a {kind} connection; its specs wait in workers")
                return None
            argv = internals.ssh_command(self._play_context, variables, templar, script)
            if argv is None:
                display.vv(f"{node}: no node watcher with password authentication; its specs wait in workers")
            return argv
        except Exception as exc:  # any doubt: the specs wait in workers, as without watchers
            display.warning(f"{node}: cannot start a node watcher ({exc}); its specs wait in workers")
            return None

    # -- ended specs ------------------------------------------------------------------------

    def _progress_shown(self) -> bool:
        """True while the specfleet_progress callback follows this run and prints its state changes itself.

        Asked of the callback object, not its name: ansible-runner loads it under its own
        (awx_display subclasses it), and a callback that found no store to follow is not live.
        """
        return any(getattr(cb, "_live", None) is not None for cb in internals.callback_plugins(self._tqm))

    def _report_ended(self, iterator) -> bool:
        """Report every started spec whose pipeline has ended; True if any did."""
        ended = False
        for task_id, host in list(self._running.items()):
            name = host.name
            if name in self._watchers.parked or internals.blocked(self, name):
                continue
            unreachable = name in internals.unreachable_hosts(self._tqm)
            if not unreachable and iterator.get_next_task_for_host(host, peek=True)[1] is not None:
                continue
            ended = True
            del self._running[task_id]
            self._watchers.forget(name)
            failure = self._failure.pop(name, "pipeline failed")
            said = self._ending.pop(name, None)
            if unreachable:
                ending, reason = Ending.UNREACHABLE, failure
            elif not iterator.is_failed(host):
                ending, reason = Ending.SUCCEEDED, None
            else:
                # A step that said nothing of itself, or an unreachable one Ansible ignored, is the spec's failure.
                ending = said if said not in (None, Ending.UNREACHABLE) else Ending.FAILED
                reason = failure
            done = self._dispatcher.finish(task_id, ending, reason)
            self._say_ended(host, ending, reason, done)
            if done.requeued:
                internals.restart_host(self._tqm, iterator, name,
                                       "dark" if ending is Ending.UNREACHABLE else "failures")
            else:
                self._finished.append(host)
        return ended

    def _say_ended(self, host, ending, reason, done) -> None:
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

    # -- results: what each step said about its spec ----------------------------------------

    def _process_pending_results(self, iterator, one_pass=False, max_passes=None):
        processed = super()._process_pending_results(iterator, one_pass, max_passes)
        for result in processed:
            data = internals.result_data(result)
            if data is None:
                continue
            name = result.host.name
            said = results.StepReport.of(data)
            if said.collected:  # the branch is back: free the slot while it lands on the controller
                task_id = result.host.vars.get("specfleet_task_id") or name
                if task_id in self._dispatcher.running:
                    self._dispatcher.collected(task_id)
                continue
            if said.waited:
                self._watchers.forget(name)
            elif said.started:
                self._watchers.started(name, said.started)
            if said.failure is None:
                continue
            self._failure[name] = said.failure
            if not result.task.ignore_errors:
                self._ending[name] = said.ending
        return processed
