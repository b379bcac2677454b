"""verify.yml and merge.yml as a user runs them: real ansible-playbook on the controller, real git."""
from __future__ import annotations

import json
import os
import subprocess

from tests.conftest import REPO_ROOT
from tests.integration.conftest import VENV_BIN
from tests.unit.test_landing import CALC, three


def playbook(site, tmp_path, name: str, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, SPECFLEET_HOME=str(tmp_path / "home"), ANSIBLE_STDOUT_CALLBACK="default",
               ANSIBLE_CALLBACK_RESULT_FORMAT="yaml")
    return subprocess.run([str(VENV_BIN / "ansible-playbook"), f"playbooks/{name}", "-e", "project=demo",
                           "-e", json.dumps({"specfleet_specs_root": str(tmp_path / "specs"),
                                             "specfleet_db": str(tmp_path / "state.db")}), *extra],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_merge_playbook_verifies_merges_and_reports_the_conflict_with_its_files(tmp_path, monkeypatch):
    monkeypatch.setenv("SPECFLEET_HOME", str(tmp_path / "home"))
    site = three(tmp_path)
    site.complete("A", {"a.py": "A = 1\n"})
    site.complete("B", {"calc.py": CALC + "\n\ndef sub(a, b):\n    return a - b\n"})
    site.complete("C", {"calc.py": CALC + "\n\ndef mul(a, b):\n    return a * b\n"})
    checked = playbook(site, tmp_path, "merge.yml", "--check")
    assert checked.returncode == 0, checked.stdout[-3000:]
    assert site.state("A") == "completed"  # check mode changes nothing
    run = playbook(site, tmp_path, "merge.yml")
    assert run.returncode == 0, run.stdout[-3000:]
    assert "demo: 2 merged into specfleet/demo/integration in 1 batches with 1 test runs" in run.stdout
    assert "C: conflict in calc.py; queued again with the conflict as feedback" in run.stdout
    assert {t: site.state(t) for t in "ABC"} == {"A": "merged", "B": "merged", "C": "queued"}
    assert subprocess.run(["git", "-C", str(site.repo), "status", "--porcelain"], capture_output=True,
                          text=True).stdout == ""
    again = playbook(site, tmp_path, "merge.yml")
    assert again.returncode == 0 and "demo: 0 merged" in again.stdout and "changed=0" in again.stdout


def test_verify_playbook_names_the_failing_check(tmp_path, monkeypatch):
    monkeypatch.setenv("SPECFLEET_HOME", str(tmp_path / "home"))
    site = three(tmp_path)
    site.complete("A", {"a.py": "A = 1\n", "README.md": "# changed\n"})
    run = playbook(site, tmp_path, "verify.yml", "-e", "specs=A")
    assert run.returncode == 2, run.stdout[-3000:]
    assert "README.md is outside modifies" in run.stdout and site.state("A") == "queued"
