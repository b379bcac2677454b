"""What counts as a secret, and how its value is cleaned out of what ansible-runner writes."""
from __future__ import annotations

import json

import pytest

from specfleet.ops import playbook


@pytest.mark.parametrize(("name", "secret"), [
    ("ANTHROPIC_API_KEY", True), ("ANTHROPIC_AUTH_TOKEN", True), ("GITHUB_TOKEN", True), ("PGPASSWORD", True),
    ("AWS_SECRET_ACCESS_KEY", True), ("DB_PASSWD", True), ("GOOGLE_CREDENTIALS", True), ("vault_minimax_api_key", True),
    ("MY_CREDENTIAL", True),
    ("ANSIBLE_HOST_KEY_CHECKING", False), ("SSH_AUTH_SOCK", False), ("ANSIBLE_PRIVATE_KEY_FILE", False),
    ("specfleet_schedule_vault_password_file", False), ("api_key_var", False), ("PATH", False),
    ("specfleet_node_authorized_keys", False), ("AWS_ACCESS_KEY_ID", False),
])
def test_a_secret_is_named_so(name, secret):
    assert playbook.is_secret(name) is secret


def test_what_the_executors_declare_is_secret_whatever_its_name(tmp_path):
    executors = tmp_path / "executors.yml"
    executors.write_text("specfleet_executors:\n  x:\n    env_from_vars: {ZAI_AUTH: vault_zai}\n  y: {type: replay}\n")
    declared = playbook.declared_secret_names(executors)
    assert declared == {"ZAI_AUTH", "vault_zai"}
    assert playbook.is_secret("ZAI_AUTH", declared) and not playbook.is_secret("ZAI_AUTH")
    assert {"ANTHROPIC_API_KEY", "vault_anthropic_api_key"} <= playbook.declared_secret_names()  # the shared file
    assert playbook.declared_secret_names(tmp_path / "missing.yml") == frozenset()


def test_values_are_replaced_raw_and_inside_json_strings_and_short_ones_are_left():
    redactor = playbook.Redactor({"API_KEY": 'sk-"quoted"\\é', "SHORT_TOKEN": "true", "LONG_KEY": "abcdefgh-more"})
    raw = 'sk-"quoted"\\é and abcdefgh-more and true'.encode()
    assert redactor.scrub(raw) == b"<API_KEY redacted> and <LONG_KEY redacted> and true"
    event = {"stdout": 'sk-"quoted"\\é', "event_data": {"res": {"cmd": ["echo", "x abcdefgh-more y"]}}}
    assert redactor.event(event) is True
    assert event == {"stdout": "<API_KEY redacted>", "event_data": {"res": {"cmd": ["echo", "x <LONG_KEY redacted> y"]}}}
    text = json.dumps({"env": {"API_KEY": 'sk-"quoted"\\é'}}).encode()
    assert json.loads(redactor.scrub(text)) == {"env": {"API_KEY": "<API_KEY redacted>"}}


def test_a_value_inside_another_is_replaced_after_it():
    redactor = playbook.Redactor({"A_KEY": "secret-1234", "B_KEY": "secret-1234-and-more"})
    assert redactor.scrub(b"secret-1234-and-more / secret-1234") == b"<B_KEY redacted> / <A_KEY redacted>"


def test_files_are_scrubbed_in_place_with_their_mode(tmp_path):
    (tmp_path / "job_events").mkdir()
    dirty = tmp_path / "job_events" / "1-x.json"
    dirty.write_text('{"stdout": "token canary-0123456789"}')
    dirty.chmod(0o600)
    clean = tmp_path / "rc"
    clean.write_text("0")
    assert playbook.Redactor({"T_TOKEN": "canary-0123456789"}).tree(tmp_path) == [dirty]
    assert dirty.read_text() == '{"stdout": "token <T_TOKEN redacted>"}' and dirty.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["1-x.json", "job_events", "rc"]
