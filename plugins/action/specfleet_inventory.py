# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin for ``specfleet_inventory`` (documentation in ``library/specfleet_inventory.py``)."""
from __future__ import annotations

from ansible.errors import AnsibleError

from ansible_specfleet.action import SpecfleetAction
from specfleet.dispatch import inventory

# Only these are read (and so templated): a vault variable elsewhere must not need its password here.
NODE_VARS = ("inventory_file", "ansible_host", "ansible_port", "specfleet_slots", "specfleet_node_priority",
             "specfleet_enabled", "specfleet_executor_labels", "specfleet_labels", "specfleet_arch",
             "specfleet_work_root", "specfleet_agent_clis")


class ActionModule(SpecfleetAction):
    def perform(self, result, args, task_vars):
        group = args["group"]
        names = list(task_vars.get("groups", {}).get(group, []))
        if not names:
            return dict(result, failed=True, msg=f"the inventory has no hosts in group {group}: add the worker nodes "
                        "there (see inventory/production)")
        hostvars = task_vars["hostvars"]
        hosts = {}
        for name in names:
            try:
                hosts[name] = {key: hostvars[name][key] for key in NODE_VARS if key in hostvars[name]}
            except AnsibleError as exc:
                return dict(result, failed=True, msg=f"{name}: a variable could not be read: {exc.message}")
        problems = inventory.check(hosts, task_vars.get("specfleet_executors"))
        nodes = [{"name": name, "slots": inventory._int(vars_.get("specfleet_slots", 0)),
                  "arch": inventory.node_arch(vars_.get("specfleet_arch", "")) or None,
                  "labels": inventory._labels(vars_.get("specfleet_executor_labels")
                                              or vars_.get("specfleet_labels")),
                  "enabled": inventory._bool(vars_.get("specfleet_enabled", True))} for name, vars_ in hosts.items()]
        result.update(changed=False, nodes=nodes, problems=[str(p) for p in problems],
                      slots=sum(n["slots"] or 0 for n in nodes if n["enabled"] and (n["slots"] or 0) > 0))
        if problems:
            result.update(failed=True, msg=f"the inventory has {len(problems)} problem(s):\n"
                          + "\n".join(f"  {p}" for p in problems))
        else:
            result["msg"] = f"{len(nodes)} nodes, {result['slots']} slots"
        return result
