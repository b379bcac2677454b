from __future__ import annotations

import multiprocessing
import sqlite3

import pytest

from specfleet.model.states import InvalidTransition, SpecState
from specfleet.store.core import MIGRATIONS, SCHEMA_VERSION, StaleState, Store, StoreError
from specfleet.validate.checks import validate_project
from tests.conftest import spec_text


def report_for(projects, **specs):
    projects.project(**specs)
    return validate_project(projects.specs_root, "demo", ["glm"], "glm", display_root="specs")


def seeded(projects, tmp_path):
    store = Store(tmp_path / "state" / "state.db")
    store.feed(report_for(projects, **{"S01.md": spec_text("S01"), "S02.md": spec_text("S02", depends_on=["S01"])}))
    return store


def snapshot(store):
    tables = ["projects", "specs", "spec_revisions", "events"]
    return {t: [tuple(r) for r in store.db.execute(f"SELECT * FROM {t} ORDER BY rowid")] for t in tables}


# -- schema and migrations --------------------------------------------------------------

def test_new_database_is_at_the_latest_version_in_wal_mode(tmp_path):
    store = Store(tmp_path / "s.db")
    assert store.schema_version == SCHEMA_VERSION
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    kinds = [e["kind"] for e in store.events()]
    assert kinds == ["schema_migrated"] * len(MIGRATIONS)


def test_migration_from_an_older_version_keeps_data(projects, tmp_path):
    path = tmp_path / "s.db"
    old = Store(path, migrations=MIGRATIONS[:1])
    old.feed(report_for(projects, **{"S01.md": spec_text("S01")}))
    assert old.schema_version == 1
    assert "slot_leases" not in {r[0] for r in old.db.execute("SELECT name FROM sqlite_master")}
    old.close()
    new = Store(path)
    assert new.schema_version == SCHEMA_VERSION
    assert new.spec("demo", "S01").state is SpecState.QUEUED
    assert "slot_leases" in {r[0] for r in new.db.execute("SELECT name FROM sqlite_master")}


def test_a_failing_migration_changes_nothing(tmp_path):
    path = tmp_path / "s.db"
    Store(path, migrations=MIGRATIONS[:1]).close()
    broken = [*MIGRATIONS[:1], (2, "broken", "CREATE TABLE fine (x INTEGER);\nCREATE TABLE oops (;")]
    with pytest.raises(sqlite3.OperationalError):
        Store(path, migrations=broken)
    after = Store(path, migrations=MIGRATIONS[:1])
    assert after.schema_version == 1
    assert "fine" not in {r[0] for r in after.db.execute("SELECT name FROM sqlite_master")}


def test_a_database_newer_than_the_code_is_refused(tmp_path):
    path = tmp_path / "s.db"
    Store(path).close()
    with pytest.raises(StoreError, match="newer than this specfleet understands"):
        Store(path, migrations=MIGRATIONS[:1])


def test_events_are_append_only(projects, tmp_path):
    store = seeded(projects, tmp_path)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        store.db.execute("UPDATE events SET kind = 'x'")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        store.db.execute("DELETE FROM events")


def test_the_database_file_is_private(tmp_path):
    store = Store(tmp_path / "s.db")
    assert store.path.stat().st_mode & 0o077 == 0


# -- transitions ------------------------------------------------------------------------

def test_transition_writes_state_version_and_an_event(projects, tmp_path):
    store = seeded(projects, tmp_path)
    before = store.spec("demo", "S01")
    after = store.transition("demo", "S01", "running", expect_state="queued", expect_version=before.version,
                             run_id="run-1", detail={"node": "node-1"})
    assert (after.state, after.version) == (SpecState.RUNNING, before.version + 1)
    event = store.events("demo", "S01")[-1]
    assert (event["from_state"], event["to_state"], event["run_id"], event["detail"]) == (
        "queued", "running", "run-1", {"node": "node-1"})


def test_forbidden_transitions_write_nothing(projects, tmp_path):
    store = seeded(projects, tmp_path)
    before = snapshot(store)
    with pytest.raises(InvalidTransition):
        store.transition("demo", "S01", "merged")
    with pytest.raises(InvalidTransition, match="needs a reason"):
        store.transition("demo", "S01", "failed")
    assert snapshot(store) == before


def test_stale_expectations_lose(projects, tmp_path):
    store = seeded(projects, tmp_path)
    version = store.spec("demo", "S01").version
    store.transition("demo", "S01", "running", expect_version=version)
    with pytest.raises(StaleState):
        store.transition("demo", "S01", "running", expect_version=version)
    with pytest.raises(StaleState, match="is running, not queued"):
        store.transition("demo", "S01", "cancelled", reason="x", expect_state="queued")
    with pytest.raises(StoreError, match="no spec 'S99'"):
        store.transition("demo", "S99", "running")


def _race(db_path, version, barrier, results):
    store = Store(db_path)
    barrier.wait()
    try:
        store.transition("demo", "S01", "running", expect_state="queued", expect_version=version)
        results.put("won")
    except StaleState:
        results.put("lost")
    finally:
        store.close()


def test_concurrent_compare_and_set_has_exactly_one_winner(projects, tmp_path):
    store = seeded(projects, tmp_path)
    version = store.spec("demo", "S01").version
    contenders = 8
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(contenders), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(store.path, version, barrier, results)) for _ in range(contenders)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
    outcomes = sorted(results.get(timeout=5) for _ in procs)
    assert outcomes == ["lost"] * (contenders - 1) + ["won"]
    assert [e["to_state"] for e in store.events("demo", "S01")].count("running") == 1


# -- feeding ----------------------------------------------------------------------------

def test_feeding_twice_changes_nothing(projects, tmp_path):
    store = seeded(projects, tmp_path)
    before = snapshot(store)
    result = store.feed(report_for(projects))
    assert not result.changed and result.unchanged == ["S01", "S02"]
    assert snapshot(store) == before


def test_feed_refuses_an_invalid_project_and_writes_nothing(projects, tmp_path):
    store = seeded(projects, tmp_path)
    before = snapshot(store)
    bad = report_for(projects, **{"S03.md": spec_text("S03", depends_on=["S404"])})
    with pytest.raises(StoreError, match="nothing was fed"):
        store.feed(bad)
    assert snapshot(store) == before


def test_check_mode_preview_writes_nothing(projects, tmp_path):
    store = seeded(projects, tmp_path)
    before = snapshot(store)
    preview = store.feed_preview(report_for(projects, **{"S03.md": spec_text("S03")}))
    assert preview.added == ["S03"]
    assert snapshot(store) == before


def revise(projects, task_id="S01", **fields):
    return report_for(projects, **{f"{task_id}.md": spec_text(task_id, title="revised", **fields)})


@pytest.mark.parametrize(("path_to_state", "state_after", "requeued"), [
    ([], "queued", False),
    (["running"], "running", False),
    (["running", "completed"], "queued", True),
    (["running", "completed", "verified"], "queued", True),
    (["running", "completed", "verified", "in_review"], "queued", True),
    (["running", "completed", "verified", "conflict"], "queued", True),
    (["running", "failed"], "failed", False),
    (["blocked"], "blocked", False),
    (["cancelled"], "cancelled", False),
    (["running", "completed", "verified", "merged"], "merged", False),
])
def test_revision_policy_by_state(projects, tmp_path, path_to_state, state_after, requeued):
    store = seeded(projects, tmp_path)
    for state in path_to_state:
        store.transition("demo", "S01", state, reason="test")
    store.db.execute("UPDATE specs SET attempts_used = 2 WHERE task_id = 'S01'")
    result = store.feed(revise(projects))
    row = store.spec("demo", "S01")
    assert result.revised == ["S01"]
    assert (row.state.value, row.revision) == (state_after, 2)
    assert (result.requeued == ["S01"]) is requeued
    assert row.attempts_used == (0 if requeued else 2)
    revisions = store.db.execute("SELECT revision FROM spec_revisions WHERE task_id = 'S01'").fetchall()
    assert [r[0] for r in revisions] == [1, 2]
    assert not store.feed(revise(projects)).changed  # the revised files, fed again


def test_removed_spec_files_cancel_queued_specs_and_flag_the_rest(projects, tmp_path):
    store = seeded(projects, tmp_path)
    store.transition("demo", "S02", "running")
    for name in ("S01.md", "S02.md"):
        (projects.specs_root / "demo" / name).unlink()
    result = store.feed(report_for(projects, **{"S03.md": spec_text("S03")}))
    assert result.removed == ["S01", "S02"] and result.added == ["S03"]
    s01, s02 = store.spec("demo", "S01"), store.spec("demo", "S02")
    assert (s01.state, s01.file_present) == (SpecState.CANCELLED, False)
    assert "spec file specs/demo/S01.md was removed" in s01.reason
    assert (s02.state, s02.file_present) == (SpecState.RUNNING, False)
    assert not store.feed(report_for(projects)).changed
    (projects.specs_root / "demo" / "S01.md").write_text(spec_text("S01"))
    (projects.specs_root / "demo" / "S02.md").write_text(spec_text("S02", depends_on=["S01"]))
    restored = store.feed(validate_project(projects.specs_root, "demo", ["glm"], "glm", display_root="specs"))
    # A cancelled spec whose file comes back is restored but stays cancelled: rescue decides.
    assert store.spec("demo", "S01").state is SpecState.CANCELLED
    assert restored.restored == ["S01", "S02"] and store.spec("demo", "S02").file_present


def test_projects_are_separate_namespaces(projects, tmp_path):
    store = seeded(projects, tmp_path)
    projects.project("other", **{"S01.md": spec_text("S01")})
    other = validate_project(projects.specs_root, "other", ["glm"], "glm", display_root="specs")
    assert store.feed(other).added == ["S01"]
    store.transition("other", "S01", "running")
    assert store.spec("demo", "S01").state is SpecState.QUEUED


def test_a_store_at_version_7_gains_the_node_labels_column(tmp_path):
    with Store(tmp_path / "s.db", migrations=MIGRATIONS[:7]) as old:
        assert old.schema_version == 7
    with Store(tmp_path / "s.db") as new:
        assert new.schema_version == SCHEMA_VERSION
        assert "labels_json" in {r[1] for r in new.db.execute("PRAGMA table_info(nodes)")}


# -- one transaction over several store methods (the lease book's grant pass) ------------

def test_a_transaction_joins_the_one_already_open_and_the_outermost_decides(projects, tmp_path):
    store = seeded(projects, tmp_path)
    before = snapshot(store)
    with pytest.raises(RuntimeError), store.transaction():
        store.transition("demo", "S01", SpecState.RUNNING)          # opens no second BEGIN
        store.record_event("note", "demo", "S01")
        raise RuntimeError("the pass fails after its writes")
    assert snapshot(store) == before and not store.db.in_transaction  # both writes rolled back together
    with store.transaction():
        store.transition("demo", "S01", SpecState.RUNNING)
        assert store.db.in_transaction                                 # the inner call did not commit
    assert store.spec("demo", "S01").state is SpecState.RUNNING and not store.db.in_transaction
    store.close()
