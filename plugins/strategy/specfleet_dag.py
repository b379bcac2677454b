# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""specfleet_dag: run spec hosts in dependency order on fleet-wide slots (see DOCUMENTATION).

Ansible's ``free`` strategy with :class:`ansible_specfleet.strategy.DagStrategyMixin` mixed
in, which holds the logic (and explains how the loop could run without this plugin).
Ansible-core 2.19 warns once per run that non-builtin strategies are deprecated; the
private ansible-core state the mixin touches is listed in ``ansible_specfleet.internals``.
"""
from __future__ import annotations

from ansible.plugins.strategy.free import StrategyModule as FreeStrategy

from ansible_specfleet.strategy import DagStrategyMixin

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
  - Play keywords C(serial) and C(throttle) are not honoured (a warning says so): node slots decide
    how many specs run at once.
  - A spec whose job outlived an earlier run (controller killed, node cut off) is granted its old
    attempt again on the same node, with C(specfleet_job_run) set to the run id of its directories
    there, so the pipeline re-attaches to the job or harvests its result instead of starting a
    second agent.
author: specfleet contributors
"""


class StrategyModule(DagStrategyMixin, FreeStrategy):
    """The ``free`` loop over the spec hosts the dispatcher has started, nothing more."""
