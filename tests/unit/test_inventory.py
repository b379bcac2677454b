"""The inventory check: the shipped inventories pass, every kind of mistake is named."""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from specfleet.dispatch import inventory
from tests.conftest import REPO_ROOT

ANSIBLE_INVENTORY = REPO_ROOT / ".venv" / "bin" / "ansible-inventory"


def listed(path) -> tuple[dict, dict]:
    """What ansible-inventory makes of ``path``: the nodes' variables and the fleet-wide ones."""
    out = subprocess.run([str(ANSIBLE_INVENTORY), "-i", str(path), "--list", "--export"], capture_output=True,
                         text=True, cwd=REPO_ROOT, env={**os.environ, "ANSIBLE_CONFIG": str(REPO_ROOT / "ansible.cfg")})
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    hostvars = data["_meta"]["hostvars"]
    names = set()
    stack = ["specfleet_nodes"]
    while stack:
        group = data.get(stack.pop(), {})
        names.update(group.get("hosts", []))
        stack.extend(group.get("children", []))
    return {n: hostvars[n] for n in names}, data.get("all", {}).get("vars", {})


def test_the_example_production_inventory_is_the_seeds_cluster():
    hosts, fleet = listed(REPO_ROOT / "inventory" / "production")
    assert inventory.check(hosts, fleet["specfleet_executors"]) == []
    assert len(hosts) == 7 and sum(int(h["specfleet_slots"]) for h in hosts.values()) == 140
    assert {inventory.node_arch(h.get("specfleet_arch", "x86_64")) for h in hosts.values()} == {"x86_64", "aarch64"}
    assert all(value == "" for name, value in fleet.items() if name.startswith("vault_"))  # an example: no keys


def nodes(**overrides) -> dict:
    base = {"n1": {"ansible_host": "192.0.2.1", "specfleet_slots": 8, "inventory_file": "inv/hosts.yml"},
            "n2": {"ansible_host": "192.0.2.2", "specfleet_slots": 8, "inventory_file": "inv/hosts.yml"}}
    for name, changes in overrides.items():
        base.setdefault(name, {"inventory_file": "inv/hosts.yml"}).update(changes)
    return base


EXECUTORS = {"glm": {"command": ["claude"]}, "codex": {"command": ["codex"]}}


@pytest.mark.parametrize("overrides,expected", [
    ({"n1": {"specfleet_slots": -2}}, "inv/hosts.yml: n1: specfleet_slots is -2; it must be 0 or more"),
    ({"n1": {"specfleet_slots": "many"}}, "inv/hosts.yml: n1: specfleet_slots must be a whole number, not 'many'"),
    ({"n3": {"ansible_host": "192.0.2.9"}}, "inv/hosts.yml: n3: specfleet_slots is missing"),
    ({"n2": {"specfleet_executor_labels": ["glm", "gpt-9"]}},
     "inv/hosts.yml: n2: specfleet_executor_labels names 'gpt-9', which is not an executor; defined: codex, glm"),
    ({"n2": {"ansible_host": "192.0.2.1"}},
     "inv/hosts.yml: n2: ansible_host 192.0.2.1:22 is also the address of n1"),
    ({"n2": {"ansible_host": "192.0.2.1", "ansible_port": 2222}}, None),
    ({"n1": {"specfleet_arch": "sparc"}}, "inv/hosts.yml: n1: specfleet_arch must be one of"),
    ({"n1": {"specfleet_enabled": "maybe"}}, "inv/hosts.yml: n1: specfleet_enabled must be true or false"),
    ({"n1": {"specfleet_work_root": "relative/dir"}}, "inv/hosts.yml: n1: specfleet_work_root must be an absolute"),
    ({"../n": {"specfleet_slots": 1, "ansible_host": "192.0.2.7"}}, "inv/hosts.yml: ../n: inventory_hostname must be"),
    ({"n1": {"specfleet_agent_clis": [{"name": "claude", "npm": "@anthropic-ai/claude-code; rm -rf /"}]}},
     "inv/hosts.yml: n1: specfleet_agent_clis[0].npm is not a valid npm package name"),
    ({"n1": {"specfleet_agent_clis": [{"name": "aider", "npm": "a", "pip": "b"}]}},
     "inv/hosts.yml: n1: specfleet_agent_clis[0] needs exactly one of npm or pip"),
    ({"n1": {"specfleet_agent_clis": [{"name": "x", "npm": "x", "version": "next"}]}},
     "inv/hosts.yml: n1: specfleet_agent_clis[0].version must be 'latest' or one exact version"),
    ({"n1": {"specfleet_agent_clis": [{"name": "x", "npm": "x", "version": "2.0.5-beta.1"}]}}, None),
    ({"n1": {"specfleet_agent_clis": [{"name": "x", "npm": "x", "version": "1.0; true"}]}},
     "inv/hosts.yml: n1: specfleet_agent_clis[0].version must be 'latest' or one exact version"),
])
def test_each_mistake_is_named_with_file_host_and_variable(overrides, expected):
    found = [str(p) for p in inventory.check(nodes(**overrides), EXECUTORS)]
    if expected is None:
        assert found == []
    else:
        assert any(text.startswith(expected) for text in found), found


def test_every_problem_is_reported_at_once_and_broken_executors_too():
    executors = {"glm": {"command": ["claude"], "fallback": "minimax"}, "bad": {"command": "claude"}}
    found = [str(p) for p in inventory.check(nodes(n1={"specfleet_slots": -1}, n2={"specfleet_slots": "x"}),
                                             executors)]
    assert any("specfleet_executors.glm" in t and "'minimax'" in t for t in found)
    assert any("specfleet_executors.bad.command" in t for t in found)
    assert sum("specfleet_slots" in t for t in found) == 2
    assert [str(p) for p in inventory.check(nodes(), None)] == [
        "group_vars: specfleet_executors is not defined (a mapping name -> definition)"]


def test_a_node_is_given_only_the_keys_of_the_executors_it_runs_and_their_fallbacks():
    import importlib.util
    path = REPO_ROOT / "roles" / "specfleet_node" / "filter_plugins" / "specfleet_node.py"
    spec = importlib.util.spec_from_file_location("specfleet_node_filters", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    executors = {"glm": {"command": ["claude"], "env_from_vars": {"T": "vault_zai"}, "fallback": "minimax"},
                 "minimax": {"command": ["claude"], "env_from_vars": {"T": "vault_minimax"}},
                 "codex": {"command": ["codex"], "env_from_vars": {"K": "vault_openai"}},
                 "opencode": {"command": ["opencode"]}}
    assert module.credential_vars(executors, ["glm"]) == ["vault_zai", "vault_minimax"]
    assert module.credential_vars(executors, ["opencode"]) == []
    assert module.credential_vars(executors, []) == ["vault_zai", "vault_minimax", "vault_openai"]
    assert module.credential_vars(executors, ["gpt-9"]) == []  # unknown labels: the inventory check names them
