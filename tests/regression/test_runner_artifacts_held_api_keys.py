"""Issue 19: ansible-runner wrote the controller's whole environment, API keys included, into
``$SPECFLEET_HOME/runner/<run>/artifacts/<id>/command``, and runner directories were never
removed (89 after an hour).

The playbook here needs the keys (it checks them and prints them, as a careless task
would); afterwards no file under the runner directory may hold one, and only the newest
``RUNNER_KEEP`` run directories may be left.
"""
from __future__ import annotations

import hashlib
import os
import secrets
import time

import pytest

from specfleet.ops import cli, playbook

PLAYBOOK = """\
- hosts: localhost
  connection: local
  gather_facts: true
  tasks:
    - name: The keys reached ansible-playbook
      ansible.builtin.assert:
        that:
          - lookup('ansible.builtin.env', 'ANTHROPIC_API_KEY') | hash('sha256') == anthropic_sha
          - lookup('ansible.builtin.env', 'SPECFLEET_TEST_TOKEN') | hash('sha256') == token_sha
          - ansible_env.ANTHROPIC_API_KEY | hash('sha256') == anthropic_sha
          - lookup('ansible.builtin.env', 'ZAI_AUTH') | hash('sha256') == zai_sha
    - name: A task that shows them
      ansible.builtin.command: echo {{ lookup('ansible.builtin.env', 'ANTHROPIC_API_KEY') }}
      changed_when: false
    - name: And a message that does
      ansible.builtin.debug:
        msg: "token {{ lookup('ansible.builtin.env', 'SPECFLEET_TEST_TOKEN') }}"
"""


@pytest.fixture
def home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("SPECFLEET_HOME", str(home))
    for name in [n for n in os.environ if n.startswith("ANSIBLE_")]:
        monkeypatch.delenv(name)
    return home


def test_keys_reach_the_playbook_but_no_file_under_the_runner_directory(home, tmp_path, monkeypatch):
    canaries = {"ANTHROPIC_API_KEY": f"canary-{secrets.token_hex(12)}",
                "SPECFLEET_TEST_TOKEN": f"canary-{secrets.token_hex(12)}",
                # A key under a name no pattern catches (a custom executor's): it must not be recorded either.
                "ZAI_AUTH": f"canary-{secrets.token_hex(12)}"}
    for name, value in canaries.items():
        monkeypatch.setenv(name, value)
    book = tmp_path / "show-keys.yml"
    book.write_text(PLAYBOOK)
    sha = {name: hashlib.sha256(value.encode()).hexdigest() for name, value in canaries.items()}

    rc = playbook.run("validate", book, {"anthropic_sha": sha["ANTHROPIC_API_KEY"],
                                       "token_sha": sha["SPECFLEET_TEST_TOKEN"], "zai_sha": sha["ZAI_AUTH"]})

    (run,) = (home / "runner" / "artifacts").iterdir()
    stdout = (run / "stdout").read_text()
    assert rc == 0, stdout[-3000:]
    files = [p for p in (home / "runner").rglob("*") if p.is_file()]
    assert {name: sum(p.read_bytes().count(value.encode()) for p in files) for name, value in canaries.items()} \
        == {name: 0 for name in canaries}
    assert "token <SPECFLEET_TEST_TOKEN redacted>" in stdout  # it was printed, and scrubbed
    assert not (home / "runner" / "env").exists() and not list(run.rglob("fact_cache"))
    assert {n: os.environ[n] for n in canaries} == canaries  # the environment is given back


def test_only_the_newest_runs_are_kept(home, tmp_path, monkeypatch):
    artifacts = home / "runner" / "artifacts"
    old = [artifacts / f"20250101-0000{i:02d}-validate-{i}" for i in range(playbook.RUNNER_KEEP)]
    for age, path in enumerate(reversed(old)):
        path.mkdir(parents=True)
        stamp = time.time() - 3600 * (age + 1)
        os.utime(path, (stamp, stamp))
    book = tmp_path / "nothing.yml"
    book.write_text("- hosts: localhost\n  connection: local\n  gather_facts: false\n  tasks: []\n")

    assert playbook.run("validate", book, {}) == 0
    assert playbook.run("validate", book, {}) == 0

    kept = sorted(p.name for p in artifacts.iterdir())
    assert len(kept) == playbook.RUNNER_KEEP
    assert [p.name for p in old[:2]] == sorted(set(p.name for p in old) - set(kept))  # the two oldest went
    assert sum(not name.startswith("2025") for name in kept) == 2


def test_cleanup_removes_runner_directories_older_than_its_age(home):
    runner = home / "runner"
    stale = [runner / "artifacts" / "20250101-000000-start-1", runner / "20250101-000000-validate-2"]  # old layout too
    fresh = runner / "artifacts" / "20250101-000000-start-3"
    for path in (*stale, fresh):
        path.mkdir(parents=True)
    for path in stale:
        os.utime(path, (time.time() - 2 * 86400,) * 2)

    assert cli.clean_runner_dirs("1d", check=True) == cli.EXIT_OK
    assert all(p.exists() for p in stale)
    assert cli.clean_runner_dirs("1d", check=False) == cli.EXIT_OK
    assert not any(p.exists() for p in stale) and fresh.exists()
    assert cli.clean_runner_dirs("a week", check=False) == cli.EXIT_INPUT
