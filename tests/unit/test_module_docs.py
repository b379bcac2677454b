"""Every module's documentation parses and names the options its action plugin accepts."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO_ROOT

MODULES = sorted((REPO_ROOT / "library").glob("specfleet_*.py"))


def _literal(path: Path, name: str):
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    return None


@pytest.mark.parametrize("module", MODULES, ids=lambda p: p.stem)
def test_documentation_parses_and_matches_the_action_plugin(module):
    doc = yaml.safe_load(_literal(module, "DOCUMENTATION"))
    assert doc["module"] == module.stem and doc["short_description"]
    yaml.safe_load(_literal(module, "EXAMPLES"))
    yaml.safe_load(_literal(module, "RETURN"))
    action = REPO_ROOT / "plugins" / "action" / module.name
    spec = _literal(action, "ARGUMENT_SPEC")
    if spec is None:  # the options live in the class body
        tree = ast.parse(action.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "ARGUMENT_SPEC" for t in node.targets):
                spec = {k.value: None for k in node.value.keys if isinstance(k, ast.Constant)}
                if any(k is None for k in node.value.keys):  # **DB_OPTION
                    spec["db"] = None
    assert spec is not None, f"{action} has no ARGUMENT_SPEC"
    assert set(spec) == set(doc.get("options") or {}), module.stem
