"""The specfleet command's acting subcommands: real playbooks through ansible-runner."""
from __future__ import annotations

import json
import re
import subprocess
import sys

from tests.conftest import REPO_ROOT
from tests.integration.test_cluster_playbooks import recap


def specfleet(fleet, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(fleet.env, PYTHONPATH=str(REPO_ROOT))
    return subprocess.run([sys.executable, "-m", "specfleet.ops.cli", *args], capture_output=True, text=True, env=env,
                          cwd="/", timeout=timeout)


def test_validate_bootstrap_and_health_run_their_playbooks_through_ansible_runner(cluster, fleet):
    ok = specfleet(fleet, "validate", "clawmarketing")
    assert ok.returncode == 0, ok.stdout[-2000:] + ok.stderr[-2000:]
    assert "8 specs valid" in ok.stdout and "specfleet validate: successful (exit 0)" in ok.stderr
    runs = sorted((fleet.home / "runner" / "artifacts").iterdir())
    assert runs and (runs[-1] / "job_events").is_dir()  # ansible-runner's events and output are kept
    missing = specfleet(fleet, "validate", "nosuch")
    assert missing.returncode == 2 and "nosuch" in missing.stdout
    boot = specfleet(fleet, "bootstrap", "node-2")
    assert boot.returncode == 0, boot.stdout[-2000:]
    assert set(recap(boot.stdout)) == {"node-2"}
    health = specfleet(fleet, "health")
    assert health.returncode == 0 and "NODE    HEALTH" in health.stdout


def test_bad_arguments_exit_2_before_any_playbook(fleet):
    assert specfleet(fleet, "review", "clawmarketing", "--reject", "S03").returncode == 2
    assert specfleet(fleet, "plan", "clawmarketing").returncode == 2
    assert specfleet(fleet, "start").returncode == 2  # argparse: the project is required
    secret = specfleet(fleet, "start", "clawmarketing", "-e", "vault_anthropic_api_key=sk-1234567890")
    assert secret.returncode == 2 and "environment" in secret.stderr and "sk-1234567890" not in secret.stderr
    assert not (fleet.home / "runner").exists()


def test_start_dispatches_with_live_progress_and_status_is_empty_after(cluster, fleet):
    run = specfleet(fleet, "start", "clawmarketing", "-e", "specfleet_job_command=true", timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert re.search(r"^\[\d\d:\d\d:\d\d\] done 8/8  running 0  waiting 0  failed 0 ", run.stdout, re.M), run.stdout
    assert len(re.findall(r"^\d\d:\d\d:\d\d  S0\S+\s+completed$", run.stdout, re.M)) == 8
    assert "PLAY RECAP" in run.stdout and "TASK [Start the job]" not in run.stdout
    shown = specfleet(fleet, "status", "clawmarketing", "--json")
    data = json.loads(shown.stdout)
    assert shown.returncode == 0 and data["projects"] == {"clawmarketing": {"completed": 8}} and data["running"] == []
