"""specfleet status: read straight from a real store, with the reason each queued spec waits."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import jsonschema
import pytest

from specfleet import cli
from specfleet.fleet import NodeInfo
from specfleet.leases import LeaseBook
from specfleet.store import Store
from tests.conftest import REPO_ROOT, spec_text
from tests.unit.test_leases import feed


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "specfleet.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT / "plugins" / "module_utils"), **(env or {})},
                          timeout=60)


def test_status_names_nodes_counts_running_specs_and_why_each_queued_spec_waits(projects, tmp_path):
    db = tmp_path / "state.db"
    with Store(db) as store:
        feed(projects, store, **{
            "S1.md": spec_text("S1", modifies=["src/app.py"]),
            "S2.md": spec_text("S2", modifies=["src/app.py"]),
            "S3.md": spec_text("S3", modifies=["src/util.py"], depends_on=["S1"]),
            "S4.md": spec_text("S4", modifies=["README.md"], executor="codex")})
        book = LeaseBook(store)
        book.open_run("demo", exclusive=False)
        nodes = [NodeInfo("n1", 1, labels=frozenset({"glm"})), NodeInfo("n2", 2, labels=frozenset({"codex"}))]
        first = book.grant("demo", nodes, only={"S1"})
        assert [g.task_id for g in first.granted] == ["S1"]
        book.quarantine("n2", "unreachable: connection refused")
        before = list(store.db.iterdump())
    data = cli.status(str(db), "demo")
    with Store(db) as store:
        assert list(store.db.iterdump()) == before  # status changed nothing (its scheduling pass was rolled back)
    assert [(n["name"], n["in_use"], n["slots"], n["health"]) for n in data["nodes"]] == [
        ("n1", 1, 1, "unknown"), ("n2", 0, 2, "quarantined")]
    assert data["nodes"][1]["reason"] == "unreachable: connection refused"
    assert data["projects"] == {"demo": {"queued": 3, "running": 1}}
    assert [(r["task_id"], r["node"], r["attempt"]) for r in data["running"]] == [("S1", "n1", 1)]
    why = {w["task_id"]: w["reason"] for w in data["waiting"]}
    assert why["S3"] == "dependency S1 is running"
    assert "S2" in why and "src/app.py" in why["S2"] and "S1" in why["S2"]   # the lock S1 holds
    assert why["S4"] == "every node that runs codex is quarantined or taken out (n2)"
    # Once the lock and the quarantine are gone, the preview grants (and rolls back) the start.
    with Store(db) as store:
        LeaseBook(store).node_healthy("n2")
    assert {w["task_id"]: w["reason"] for w in cli.status(str(db), "demo")["waiting"]}["S4"] == (
        "ready: the next scheduling pass starts it")

    shown = run_cli("--db", str(db), "status", "demo")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].split() == ["NODE", "SLOTS", "HEALTH", "WHY"] and lines[1].split()[:3] == ["n1", "1/1", "unknown"]
    assert any(line.split()[:3] == ["S1", "demo", "n1"] for line in lines)
    as_json = json.loads(run_cli("--db", str(db), "status", "--json").stdout)
    assert as_json["waiting"] == cli.status(str(db))["waiting"]
    schema = json.loads((REPO_ROOT / "plugins/module_utils/specfleet/schema/status.schema.json").read_text())
    jsonschema.validate(as_json, schema)
    with pytest.raises(jsonschema.ValidationError):  # the schema does hold the output to its shape
        jsonschema.validate(dict(as_json, running=[{"task_id": "S1"}]), schema)


def test_status_exit_codes(projects, tmp_path):
    db = tmp_path / "state.db"
    assert run_cli("--db", str(db), "status").returncode == 0  # no store yet: nothing to show
    with Store(db) as store:
        feed(projects, store, **{"S1.md": spec_text("S1"), "S2.md": spec_text("S2", depends_on=["S1"])})
        store.transition("demo", "S1", "failed", reason="verify failed 3 times")
    assert run_cli("--db", str(db), "status", "nosuch").returncode == 2
    failed = run_cli("--db", str(db), "status", "demo")
    assert failed.returncode == 1  # a failed spec, listed with why
    assert any(line.split()[:3] == ["S1", "demo", "failed"] and "verify failed 3 times" in line
               for line in failed.stdout.splitlines())
    (tmp_path / "bad.db").write_text("not a database")
    broken = run_cli("--db", str(tmp_path / "bad.db"), "status")
    assert broken.returncode == 3 and "state store" in broken.stderr


def test_report_writes_the_daily_report_from_the_store_at_once(projects, tmp_path):
    db = tmp_path / "state.db"
    with Store(db) as store:
        feed(projects, store, **{"S1.md": spec_text("S1"), "S2.md": spec_text("S2")})
        book = LeaseBook(store)
        book.open_run("demo", exclusive=False)
        grant = book.grant("demo", [NodeInfo("n1", 2)], only={"S1"}).granted[0]
        book.finish(grant, succeeded=True)
    out = tmp_path / "reports"
    made = run_cli("--db", str(db), "report", "demo", "-e", f"report_dir={out}")
    assert made.returncode == 0, made.stderr
    day = made.stdout.strip().splitlines()[-1].rsplit("/", 1)[-1].removesuffix(".html")
    page = (out / f"{day}.html").read_text()
    assert "<svg" in page and "S1 attempt 1 on n1" in page and (out / f"{day}.md").is_file()
    assert run_cli("--db", str(db), "report", "demo", "--day", "2024-13-01").returncode == 2
