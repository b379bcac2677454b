"""Fleet as code on real sshd nodes: bootstrap admits or keeps out, health takes out and puts back."""
from __future__ import annotations

import json
import sqlite3
import stat
import subprocess
import time
from pathlib import Path

from tests.conftest import REPO_ROOT
from tests.integration.conftest import VENV_BIN
from tests.integration.test_cluster_playbooks import recap, work_root

KEY = "zk-secret-0123456789abcdef"


def fake_clis(folder: Path, **versions: str) -> Path:
    """Commands that answer --version like the real CLIs (``claude --version`` -> ``2.0.5 (Claude Code)``)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, version in versions.items():
        path = folder / name
        path.write_text(f"#!/bin/sh\necho '{version} ({name})'\n")
        path.chmod(0o755)
    return folder


def extra_vars(tmp_path: Path, bin_dir: Path, clis: list[str], **more) -> str:
    data = {"specfleet_agent_clis": [{"name": name, "npm": name, "version": "latest"} for name in clis],
            "specfleet_cli_path": f"{bin_dir}:/usr/bin:/bin", **more}
    path = tmp_path / "vars.json"
    path.write_text(json.dumps(data))
    return "@" + str(path)


def nodes(db: Path) -> dict[str, dict]:
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    return {r["name"]: dict(r) for r in con.execute("SELECT * FROM nodes")}


def test_bootstrap_writes_keys_and_facts_admits_the_nodes_and_is_idempotent(cluster, fleet, tmp_path):
    bin_dir = fake_clis(tmp_path / "bin", fakeclaude="2.0.5", fakecodex="0.46.0")
    args = ("-e", extra_vars(tmp_path, bin_dir, ["fakeclaude", "fakecodex"], vault_zai_api_key=KEY))
    run = fleet.playbook("bootstrap.yml", "-v", *args)
    assert run.returncode == 0, run.output[-3000:]
    assert KEY not in run.output
    for name in ("node-1", "node-2", "node-3"):
        root = work_root(cluster, name)
        creds = root / "credentials.env"
        assert stat.S_IMODE(creds.stat().st_mode) == 0o600
        assert f"vault_zai_api_key='{KEY}'" in creds.read_text().splitlines()
        info = json.loads((root / "node-info.json").read_text())
        assert info["clis"] == {"fakeclaude": "2.0.5", "fakecodex": "0.46.0"} and info["name"] == name
        assert info["credentials"] == ["vault_zai_api_key"] and len(info["tools"]["runner"]) == 12
        assert json.loads((root / "facts.d" / "specfleet.fact").read_text()) == info
        assert (root / "runner" / "runner.py").is_file() and (root / "mirrors").is_dir()
    rows = nodes(fleet.db)
    assert {n: r["disabled_by"] for n, r in rows.items()} == {"node-1": None, "node-2": None, "node-3": None}
    assert json.loads(rows["node-2"]["facts_json"])["credentials"] == ["vault_zai_api_key"]
    assert KEY not in fleet.db.read_bytes().decode(errors="replace")
    again = fleet.playbook("bootstrap.yml", *args)
    assert again.returncode == 0, again.output[-3000:]
    assert {h: c["changed"] for h, c in recap(again.output).items()} == {"node-1": 0, "node-2": 0, "node-3": 0}
    # A new key is rolled out with --tags credentials: that part only, then the post-check.
    rolled = fleet.playbook("bootstrap.yml", "--tags", "credentials", "-e", extra_vars(
        tmp_path, bin_dir, ["fakeclaude", "fakecodex"], vault_zai_api_key=KEY + "-new"))
    assert rolled.returncode == 0, rolled.output[-3000:]
    assert {h: c["changed"] for h, c in recap(rolled.output).items()} == {"node-1": 1, "node-2": 1, "node-3": 1}
    assert f"vault_zai_api_key='{KEY}-new'" in (work_root(cluster, "node-1") / "credentials.env").read_text()
    assert "Install the runner" not in rolled.output and "Check that every agent CLI answers" in rolled.output
    # The facts are Ansible's too: ansible_local.specfleet, as any play gathers them.
    facts = subprocess.run([str(VENV_BIN / "ansible"), "node-3", "-m", "ansible.builtin.setup", "-a",
                            f"gather_subset=!all,!min,local fact_path={work_root(cluster, 'node-3') / 'facts.d'}"],
                           cwd=REPO_ROOT, env=fleet.env, capture_output=True, text=True, timeout=120)
    assert facts.returncode == 0, facts.stdout + facts.stderr
    assert "ansible_local:\n            specfleet:" in facts.stdout and "fakecodex: 0.46.0" in facts.stdout


def test_a_node_whose_cli_does_not_answer_is_kept_out_until_a_bootstrap_passes(cluster, fleet, tmp_path):
    bin_dir = fake_clis(tmp_path / "bin", fakeclaude="2.0.5")
    broken = fleet.playbook("bootstrap.yml", "--limit", "node-2",
                            "-e", extra_vars(tmp_path, bin_dir, ["fakeclaude", "nosuchcli"]))
    assert broken.returncode == 2, broken.output[-3000:]
    assert "nosuchcli did not answer" in broken.output
    row = nodes(fleet.db)["node-2"]
    assert row["disabled_by"] == "bootstrap" and "nosuchcli did not answer" in row["disabled_reason"]
    assert set(nodes(fleet.db)) == {"node-2"}
    # A health check cannot bring it back; a bootstrap that passes does.
    health = fleet.playbook("playbooks/health.yml", "--limit", "node-2",
                            "-e", extra_vars(tmp_path, bin_dir, ["fakeclaude"]))
    assert health.returncode == 0 and nodes(fleet.db)["node-2"]["disabled_by"] == "bootstrap"
    fixed = fleet.playbook("bootstrap.yml", "--limit", "node-2", "-e", extra_vars(tmp_path, bin_dir, ["fakeclaude"]))
    assert fixed.returncode == 0, fixed.output[-3000:]
    assert nodes(fleet.db)["node-2"]["disabled_by"] is None


def test_check_mode_reports_and_changes_nothing_on_the_node_or_in_the_store(cluster, fleet, tmp_path):
    fresh = tmp_path / "fresh-root"
    run = fleet.playbook("bootstrap.yml", "--check", "--limit", "node-1", "-e", f"specfleet_work_root={fresh}")
    assert run.returncode == 0, run.output[-3000:]
    assert recap(run.output)["node-1"]["changed"] > 0
    assert not fresh.exists()
    assert not fleet.db.exists() or nodes(fleet.db) == {}


def test_a_bad_inventory_stops_bootstrap_before_any_node_is_touched(cluster, fleet, tmp_path):
    fresh = tmp_path / "fresh-root"
    run = fleet.playbook("bootstrap.yml", "-e", "specfleet_slots=-3", "-e", f"specfleet_work_root={fresh}")
    assert run.returncode == 2
    assert "node-1: specfleet_slots is -3; it must be 0 or more" in run.output
    assert not fresh.exists()


def test_health_takes_nodes_out_and_puts_them_back(cluster, fleet, tmp_path):
    bin_dir = fake_clis(tmp_path / "bin", fakeclaude="2.0.5")
    args = ("-e", extra_vars(tmp_path, bin_dir, ["fakeclaude"]))
    boot = fleet.playbook("bootstrap.yml", *args)
    assert boot.returncode == 0, boot.output[-3000:]
    healthy = fleet.playbook("playbooks/health.yml", *args)
    assert healthy.returncode == 0, healthy.output[-3000:]
    table = healthy.output[healthy.output.index("NODE "):].splitlines()
    assert table[0].split()[:3] == ["NODE", "HEALTH", "FREE"]
    assert [line.split()[:2] for line in table[1:4]] == [["node-1", "healthy"], ["node-2", "healthy"],
                                                         ["node-3", "healthy"]]
    (bin_dir / "fakeclaude").unlink()
    sick = fleet.playbook("playbooks/health.yml", "-e", "specfleet_health_fail=true", *args)
    assert sick.returncode == 2 and "fakeclaude is not installed" in sick.output
    assert {r["disabled_by"] for r in nodes(fleet.db).values()} == {"health"}
    fake_clis(bin_dir, fakeclaude="2.0.7")
    back = fleet.playbook("playbooks/health.yml", *args)
    assert back.returncode == 0 and "fakeclaude changed since bootstrap: 2.0.5 -> 2.0.7" in back.output
    assert {r["disabled_by"] for r in nodes(fleet.db).values()} == {None}
    kinds = [k for (k,) in sqlite3.connect(fleet.db).execute(
        "SELECT kind FROM events WHERE kind LIKE 'node_%' AND detail_json LIKE '%\"health\"%' ORDER BY id")]
    assert kinds == ["node_disabled"] * 3 + ["node_enabled"] * 3


def test_an_unreachable_node_is_taken_out_and_the_others_are_checked(cluster, fleet, tmp_path):
    node = cluster.node("node-3")
    node.stop()
    try:
        run = fleet.playbook("playbooks/health.yml")
        assert run.returncode == 0, run.output[-3000:]
        line = next(x for x in run.output.splitlines() if x.lstrip().startswith("node-3 "))
        assert line.split()[1] == "unreachable" and "unreachable:" in line
        rows = nodes(fleet.db)
        assert rows["node-3"]["disabled_by"] == "health" and rows["node-1"]["disabled_by"] is None
    finally:
        node.start()
        node.wait_ready(time.monotonic() + 30)
    assert fleet.playbook("playbooks/health.yml").returncode == 0
    assert nodes(fleet.db)["node-3"]["disabled_by"] is None
