"""specfleet status: read straight from a real store, with the reason each queued spec waits."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime

import jsonschema
import pytest

from specfleet.dispatch.leases import LeaseBook
from specfleet.dispatch.policy import NodeInfo
from specfleet.ops import cli
from specfleet.report import usage
from specfleet.store import base as store_base
from specfleet.store.core import Store
from tests.conftest import REPO_ROOT, spec_text
from tests.unit.test_leases import feed


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "specfleet.ops.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})},
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
    schema = json.loads((REPO_ROOT / "specfleet/model/schema/status.schema.json").read_text())
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


# -- tokens and cost ---------------------------------------------------------------------------

MIDNIGHT = int(time.time() // 86400) * 86400          # today, UTC: both days below are over
DAY1, DAY2 = MIDNIGHT - 2 * 86400, MIDNIGHT - 86400
GLM, CODEX = NodeInfo("n1", 2, labels=frozenset({"glm"})), NodeInfo("n2", 1, labels=frozenset({"codex"}))


def spend(input_tokens: int, output_tokens: int, cost: float | None, model: str) -> dict:
    """The runner's sum over an attempt's tries (``runner.sum_usage``)."""
    return {"input_tokens": input_tokens, "output_tokens": output_tokens, "cost_usd": cost, "models": [model]}


@pytest.fixture
def spent_store(projects, tmp_path, monkeypatch):
    """Four specs over two UTC days; three attempts collected with usage, one still running.

    ===== ============ ==== ======= ============================================ ==========
    spec  started      node  exec    usage (in / out / cost)                      then
    ===== ============ ==== ======= ============================================ ==========
    S1#1  day 1 22:00  n1    glm     1,000 / 200 / $0.50 (the CLI said)           failed, retried
    S2#1  day 2 01:00  n2    codex   5,000 / 100 / unknown (no cost, no prices)   failed
    S4#1  day 2 03:00  n1    glm     3,000 / 400 / $0.25 (from inventory prices)  completed
    S1#2  day 2 04:00  n1    -       not collected yet                            running
    ===== ============ ==== ======= ============================================ ==========
    S3 depends on S1 and waits.
    """
    clock = {"t": DAY1 + 20 * 3600.0}
    monkeypatch.setattr(store_base, "now", lambda: clock["t"])
    db = tmp_path / "state.db"
    with Store(db) as store:
        feed(projects, store, **{
            "S1.md": spec_text("S1", modifies=["src/app.py"], retries=1),
            "S2.md": spec_text("S2", modifies=["src/util.py"], executor="codex", retries=0),
            "S3.md": spec_text("S3", modifies=["src/s3.py"], depends_on=["S1"]),
            "S4.md": spec_text("S4", modifies=["README.md"])})
        book = LeaseBook(store, ttl=30 * 86400)
        book.open_run("demo", exclusive=False)

        def attempt(task_id: str, node: NodeInfo, when: float, usage: dict | None, ok: bool | None) -> None:
            clock["t"] = when
            grant = book.grant("demo", [node], only={task_id}).granted[0]
            if ok is None:
                return
            clock["t"] = when + 600
            store.record_attempt("demo", task_id, grant.attempt, executor=next(iter(node.labels)), usage=usage)
            book.finish(grant, ok, None if ok else "verify failed")

        attempt("S1", GLM, DAY1 + 22 * 3600, spend(1000, 200, 0.5, "glm-4.6"), ok=False)
        attempt("S2", CODEX, DAY2 + 1 * 3600, spend(5000, 100, None, "gpt-5-codex"), ok=False)
        attempt("S4", GLM, DAY2 + 3 * 3600, spend(3000, 400, 0.25, "glm-4.6"), ok=True)
        attempt("S1", GLM, DAY2 + 4 * 3600, None, ok=None)
        clock["t"] = DAY2 + 5 * 3600
    return db


def day(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).date().isoformat()


def figures_of(entries: list[dict], key: str) -> dict:
    return {e[key]: (e["attempts"], e["input_tokens"], e["output_tokens"], e["cost_usd"], e["cost_unknown"])
            for e in entries}


@pytest.mark.parametrize("by, expected", [
    ("executor", {"codex": (1, 5000, 100, None, 1), "glm": (2, 4000, 600, 0.75, 0)}),
    ("node", {"n1": (2, 4000, 600, 0.75, 0), "n2": (1, 5000, 100, None, 1)}),
    ("day", {day(DAY1): (1, 1000, 200, 0.5, 0), day(DAY2): (2, 8000, 500, 0.25, 1)}),
], ids=["executor", "node", "day"])
def test_status_sums_tokens_and_cost_per_project_by_executor_node_and_day(spent_store, by, expected):
    data = cli.status(str(spent_store), "demo")
    block = data["usage"]["demo"]
    assert block["total"] == {"attempts": 3, "input_tokens": 9000, "output_tokens": 700, "cost_usd": 0.75,
                              "cost_unknown": 1}
    assert figures_of(block[f"by_{by}"], by) == expected
    # The same numbers Store.usage gives (which knows nothing of the unknown count).
    with Store(spent_store) as store:
        assert [{k: v for k, v in e.items() if k != "cost_unknown"} for e in block[f"by_{by}"]] == \
            store.usage("demo", by=by)


@pytest.mark.parametrize("listed, task_id, expected", [
    ("running", "S1", (1, 1000, 200, 0.5, 0)),        # what its earlier attempt used; the running one is not in yet
    ("failed", "S2", (1, 5000, 100, None, 1)),        # no cost known: null, not 0
    ("waiting", "S3", (0, 0, 0, None, 0)),            # never ran
], ids=["running", "failed", "waiting"])
def test_status_gives_each_listed_spec_its_tokens_and_cost(spent_store, listed, task_id, expected):
    data = cli.status(str(spent_store), "demo")
    entry = next(e for e in data[listed] if e["task_id"] == task_id)
    assert figures_of([dict(entry["usage"], task_id=task_id)], "task_id") == {task_id: expected}


def test_status_shows_usage_per_executor_with_unknown_cost_never_zero(spent_store):
    shown = run_cli("--db", str(spent_store), "status", "demo")
    assert shown.returncode == 1, shown.stderr                        # S2 failed
    lines = shown.stdout.splitlines()
    header = lines.index(next(line for line in lines if line.startswith("USAGE")))
    assert lines[header].split() == ["USAGE", "PROJECT", "ATTEMPTS", "TOKENS", "IN", "TOKENS", "OUT", "COST"]
    assert [line.split() for line in lines[header + 1:]] == [
        ["codex", "demo", "1", "5,000", "100", "unknown"],
        ["glm", "demo", "2", "4,000", "600", "$0.7500"],
        ["(total)", "demo", "3", "9,000", "700", "$0.7500", "(+1", "unknown)"]]
    as_json = json.loads(run_cli("--db", str(spent_store), "status", "--json").stdout)
    schema = json.loads((REPO_ROOT / "specfleet/model/schema/status.schema.json").read_text())
    jsonschema.validate(as_json, schema)
    assert as_json["usage"]["demo"]["by_executor"][0] == {"executor": "codex", "attempts": 1, "input_tokens": 5000,
                                                          "output_tokens": 100, "cost_usd": None, "cost_unknown": 1}
    with pytest.raises(jsonschema.ValidationError):               # a cost cannot go missing from the block
        broken = json.loads(json.dumps(as_json))
        del broken["usage"]["demo"]["total"]["cost_usd"]
        jsonschema.validate(broken, schema)


def test_status_of_a_store_with_no_usage_shows_no_usage_section(projects, tmp_path):
    db = tmp_path / "state.db"
    with Store(db) as store:
        feed(projects, store, **{"S1.md": spec_text("S1")})
    data = cli.status(str(db))
    assert data["usage"] == {"demo": {"total": {"attempts": 0, "input_tokens": 0, "output_tokens": 0, "cost_usd": None,
                                                "cost_unknown": 0}, "by_executor": [], "by_node": [], "by_day": []}}
    assert "USAGE" not in cli.render_status(data)
    assert cli.status(str(tmp_path / "none.db"))["usage"] == {}


@pytest.mark.parametrize("entry, text", [
    ({"attempts": 2, "cost_usd": None, "cost_unknown": 2}, "unknown"),
    ({"attempts": 0, "cost_usd": None, "cost_unknown": 0}, "-"),
    ({"attempts": 1, "cost_usd": 0.0, "cost_unknown": 0}, "$0.0000"),      # a known zero (a free local model)
    ({"attempts": 3, "cost_usd": 0.042, "cost_unknown": 0}, "$0.0420"),
    ({"attempts": 3, "cost_usd": 0.5, "cost_unknown": 2}, "$0.5000 (+2 unknown)"),
    ({"attempts": 9, "cost_usd": 1234.5, "cost_unknown": 0}, "$1,234.50"),
])
def test_cost_is_written_unknown_rather_than_zero(entry, text):
    assert usage.cost_text(entry) == text
