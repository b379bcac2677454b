"""The inventory's chat endpoints (review, planning) resolved with Ansible's own templating."""
from __future__ import annotations

import pytest
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

from ansible_specfleet.action import chat_endpoint

KEY = "sk-endpoint-canary-93b1"


def resolve(task_vars: dict, name: str = "specfleet_review_endpoint"):
    return chat_endpoint(Templar(loader=DataLoader(), variables=task_vars), task_vars, name)


def test_settings_are_templated_and_the_key_is_looked_up_by_name():
    # Inventory values are trusted templates; these stand in for them.
    point = resolve({"host": "127.0.0.1", "vault_k": KEY, "specfleet_review_endpoint": {
        "base_url": trust_as_template("http://{{ host }}:8000/v1"), "model": "m", "api_key_var": "vault_k",
        "retries": trust_as_template("{{ 1 + 1 }}")}})
    assert (point.base_url, point.api_key, point.retries) == ("http://127.0.0.1:8000/v1", KEY, 2)
    assert KEY not in repr(point)
    assert resolve({}) is None


def test_a_template_in_api_key_var_is_refused_without_showing_the_key():
    with pytest.raises(ValueError) as caught:
        resolve({"vault_k": KEY, "specfleet_plan_endpoint": {
            "base_url": "http://x/v1", "model": "m", "api_key_var": trust_as_template("{{ vault_k }}")}},
            "specfleet_plan_endpoint")
    assert "must be the *name* of the variable" in str(caught.value) and KEY not in str(caught.value)
