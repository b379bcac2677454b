# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Every use of ansible-core's private internals by specfleet's strategy, in one place.

ansible-core gives third-party strategies no public interface (ansible/ansible#84725
deprecated them in 2.19 as "deeply tied to the internals"). The specfleet_dag strategy
needs a few private attributes all the same; each function below names the one it touches
and what breaks when an ansible-core upgrade renames or reshapes it. Checked against
ansible-core 2.19. The attributes every strategy plugin receives from ``StrategyBase``
(``_inventory``, ``_variable_manager``, ``_loader``, ``_tqm``) are used as they are.
"""
from __future__ import annotations

from ansible.executor.play_iterator import HostState


def unreachable_hosts(tqm) -> dict:
    """``tqm._unreachable_hosts``: host name -> True once a task could not reach it.

    Upgrade risk: renamed or turned into a set, specfleet no longer sees unreachable spec
    hosts (their node would not be quarantined; the spec would be charged an attempt).
    """
    return tqm._unreachable_hosts


def callback_plugins(tqm) -> tuple:
    """``tqm._callback_plugins``: the loaded callback objects.

    Upgrade risk: renamed, the strategy no longer notices the progress callback and prints
    its own start lines next to the callback's (output doubled, nothing wrong).
    """
    return tuple(getattr(tqm, "_callback_plugins", ()))


def play_of(iterator):
    """``iterator._play``: the play the iterator walks (its hosts, order, keywords)."""
    return iterator._play


def restart_host(tqm, iterator, name: str, stat: str) -> None:
    """Make a failed host run the play's tasks from the top again, and take back its failure.

    Touches ``iterator._blocks`` (the play's compiled blocks, for a fresh ``HostState``),
    ``tqm._unreachable_hosts``, ``tqm._failed_hosts``, ``iterator._play._removed_hosts``
    and ``tqm._stats`` (``stat`` is ``dark`` or ``failures``). Upgrade risk: a requeued spec
    would not run again (the free loop thinks the host is done or failed), or the recap
    would count the requeue as the spec's final outcome.
    """
    iterator.set_state_for_host(name, HostState(blocks=iterator._blocks))
    tqm._unreachable_hosts.pop(name, None)
    tqm._failed_hosts.pop(name, None)
    removed = iterator._play._removed_hosts
    removed[:] = [h for h in removed if h != name]
    # The recap describes the spec's final outcome; the requeue is in the log above.
    tqm._stats.decrement(stat, name)


def count_skipped(tqm, name: str) -> None:
    """``tqm._stats.increment``: a spec host dropped before it ran shows as skipped in the recap.

    Upgrade risk: the recap would not list dropped specs.
    """
    tqm._stats.increment("skipped", name)


def blocked(strategy, name: str) -> bool:
    """``strategy._blocked_hosts``: the host has a task queued or running in a worker.

    Upgrade risk: renamed, a spec would be parked or reported ended while its step runs.
    """
    return strategy._blocked_hosts.get(name, False)


def results_waiting(strategy) -> bool:
    """``strategy._results``: results that workers returned and the loop has not processed."""
    return bool(strategy._results)


def grow_workers(strategy, wanted: int) -> None:
    """``strategy._workers``: the worker slots the free loop fills (``forks`` of them at start).

    Every running spec may wait in a worker, so there must be one per running spec.
    Upgrade risk: a fixed-size pool would cap concurrency at ``forks`` specs.
    """
    missing = wanted - len(strategy._workers)
    if missing > 0:
        strategy._workers.extend([None] * missing)


def hosts_caches(strategy) -> dict:
    """``strategy._hosts_cache`` / ``_hosts_cache_all``: what task variables are built with."""
    return {"_hosts": strategy._hosts_cache, "_hosts_all": strategy._hosts_cache_all}


def result_data(result) -> dict | None:
    """``TaskResult._return_data``: what the action returned (after ``failed_when``)."""
    data = result._return_data
    return data if isinstance(data, dict) else None


def templar_for(loader, variables: dict):
    """A ``TemplateEngine`` over ``variables``, to template values as a worker would.

    ``ansible._internal``'s engine: the public ``Templar`` warns of deprecation for this
    use. Upgrade risk: the module moved once already (2.19); an import error stops the
    node watchers from starting (their specs wait in workers).
    """
    from ansible._internal._templating._engine import TemplateEngine
    return TemplateEngine(loader=loader, variables=variables)


def ssh_command(play_context, variables: dict, templar, script: str) -> list | None:
    """The argv Ansible's ssh connection would run ``script`` with on the host of ``variables``.

    Uses the ssh plugin's private ``_resolve_option_variables`` and ``_build_command``.
    None when the connection uses a password (no watcher then). Upgrade risk: the node
    watchers cannot start (every spec waits in a worker, as with ``specfleet_node_watch=false``).
    """
    from ansible.plugins.loader import connection_loader
    conn = connection_loader.get("ssh", play_context)
    conn.set_options(task_keys={"timeout": play_context.timeout},
                     var_options=conn._resolve_option_variables(variables, templar))
    if conn.get_option("password") or play_context.password:
        return None
    conn.host = conn.get_option("host")
    return conn._build_command(conn.get_option("ssh_executable"), "ssh", conn.host, script)
