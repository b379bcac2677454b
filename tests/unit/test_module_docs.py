"""Every module's documentation parses and is the one source of its action plugin's options and rules."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_specfleet.action import ModuleInterface, module_interface
from tests.conftest import REPO_ROOT

MODULES = sorted((REPO_ROOT / "library").glob("specfleet_*.py"))


def _literal(path: Path, name: str):
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    return None


@pytest.mark.parametrize("module", MODULES, ids=lambda p: p.stem)
def test_documentation_parses_and_is_what_the_action_plugin_accepts(module):
    doc = yaml.safe_load(_literal(module, "DOCUMENTATION"))
    assert doc["module"] == module.stem and doc["short_description"]
    yaml.safe_load(_literal(module, "EXAMPLES"))
    yaml.safe_load(_literal(module, "RETURN"))
    action = REPO_ROOT / "plugins" / "action" / module.name
    assert "ARGUMENT_SPEC" not in action.read_text(), f"{action} writes its options a second time"
    interface = module_interface(str(action))
    assert set(interface.argument_spec) == set(doc.get("options") or {}), module.stem
    for name, option in doc["options"].items():
        assert interface.argument_spec[name]["type"] == option["type"], (module.stem, name)
        assert interface.argument_spec[name].get("default") == option.get("default"), (module.stem, name)
        assert "description" not in interface.argument_spec[name]


# module, arguments, what the refusal says: one row per bad combination.
JOB = {"root": "~/w", "project": "p", "task_id": "S01", "attempt": 1, "run_id": "r1"}
ATTEMPT = dict(JOB, node="n1")
BAD_ARGUMENTS = [
    ("specfleet_job", dict(JOB, state="started"), "state is started but all of the following are missing: command"),
    ("specfleet_job", dict(JOB, state="paused"), "value of state must be one of: started, finished, cancelled"),
    ("specfleet_job", {"state": "finished"}, "missing required arguments: attempt, project, root, run_id, task_id"),
    ("specfleet_attempt", dict(ATTEMPT, state="started", attempt="first"), "attempt"),
    ("specfleet_attempt", dict(ATTEMPT, state="collected", leftover="perhaps"), "leftover"),
    ("specfleet_node_state", {"node": "n1", "state": "disabled", "by": "health"},
     "state is disabled but all of the following are missing: reason"),
    ("specfleet_node_state", {"node": "n1", "state": "enabled", "by": "someone"},
     "value of by must be one of: bootstrap, health"),
    ("specfleet_plan", {"project": "p", "direction": "add a cache", "direction_file": "d.md"},
     "parameters are mutually exclusive: direction|direction_file"),
    ("specfleet_plan", {"project": "p", "into": "elsewhere"}, "value of into must be one of: pending, project"),
    ("specfleet_feed", {"project": "p", "colour": "blue"}, "colour"),
    ("specfleet_stop", {"project": "p", "mode": "now"}, "value of mode must be one of"),
]


def _errors(module: str, arguments: dict) -> str:
    interface = ModuleInterface.of_file(REPO_ROOT / "library" / f"{module}.py")
    result = ArgumentSpecValidator(interface.argument_spec, **interface.rules).validate(arguments)
    return "; ".join(result.error_messages)


@pytest.mark.parametrize(("module", "arguments", "says"), BAD_ARGUMENTS,
                         ids=[f"{m}-{'-'.join(sorted(a))[:40]}" for m, a, _s in BAD_ARGUMENTS])
def test_a_bad_argument_combination_is_refused_with_a_clear_message(module, arguments, says):
    assert says in _errors(module, arguments)


@pytest.mark.parametrize(("module", "arguments"), [
    ("specfleet_job", dict(JOB, state="started", command="true")),
    ("specfleet_job", dict(JOB, state="finished")),
    ("specfleet_node_state", {"node": "n1", "state": "disabled", "by": "health", "reason": "disk full"}),
    ("specfleet_node_state", {"node": "n1", "state": "enabled", "by": "bootstrap"}),
    ("specfleet_plan", {"project": "p", "direction": "add a cache"}),
    ("specfleet_plan", {"project": "p", "approve": ["all"]}),
])
def test_a_good_argument_combination_passes(module, arguments):
    assert _errors(module, arguments) == ""


def test_an_unknown_rule_in_the_documentation_is_refused():
    with pytest.raises(ValueError, match="unknown rule"):
        ModuleInterface.from_doc({"options": {}, "argument_spec_rules": {"required_unless": []}})
