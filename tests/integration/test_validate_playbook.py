"""playbooks/validate.yml, run for real on the controller."""
from __future__ import annotations

import sqlite3

from tests.conftest import REPO_ROOT, spec_text


def test_the_example_project_is_valid(controller):
    run = controller.playbook("playbooks/validate.yml", "-e", "project=clawmarketing")
    assert run.returncode == 0, run.output
    assert "project clawmarketing: 8 specs valid" in run.output
    assert "not a spec: specs/clawmarketing/NOTES.md (no front matter)" in run.output
    assert not controller.db.exists()  # validation writes nothing


def test_every_problem_is_reported_with_file_and_field(controller, tmp_path):
    folder = tmp_path / "specs" / "broken"
    folder.mkdir(parents=True)
    repo = controller.home / "repos" / "clawmarketing"
    (folder / "project.yml").write_text(f"repository: {repo}\nverify: ./run.sh test\n")
    (folder / "S01.md").write_text(spec_text("S01", modifies=["backend/app.py"], depends_on=["S02"]))
    (folder / "S02.md").write_text(spec_text("S02", modifies=["backend/app.py"], depends_on=["S01"]))
    (folder / "S03.md").write_text(spec_text("S03", modifies=["../../etc/shadow"], executor="gpt-x"))
    (folder / "S04.md").write_text(spec_text("S04", modifies=["backend/auth.py"]))
    run = controller.playbook("playbooks/validate.yml", "-e", "project=broken",
                              "-e", f"specfleet_specs_root={tmp_path / 'specs'}")
    assert run.returncode == 2, run.output
    for line in (
        "S01.md: field 'depends_on': dependency cycle: S01 -> S02 -> S01",
        "S02.md: field 'depends_on': dependency cycle: S01 -> S02 -> S01",
        "S03.md:3: field 'modifies': entry '../../etc/shadow' contains '..' and would escape the repository",
        "S03.md:4: field 'executor': 'gpt-x' is not defined in the inventory",
        "valid: S04",
        "nothing was queued",
    ):
        assert line in run.output, line


def test_a_missing_project_name_is_a_clear_error(controller):
    run = controller.playbook("playbooks/validate.yml")
    assert run.returncode == 2
    assert "name the project: -e project=<folder under specs/>" in run.output


def test_an_unknown_project_suggests_the_closest(controller):
    run = controller.playbook("playbooks/validate.yml", "-e", "project=clawmarketting")
    assert run.returncode == 2
    assert "specs/clawmarketting: is not a directory (did you mean 'clawmarketing'?)" in run.output


def _inventory(tmp_path):
    """An inventory with a worker node named like a spec might be, and the project's executors."""
    folder = tmp_path / "inventory"
    folder.mkdir()
    (folder / "hosts.yml").write_text(
        "all:\n  children:\n    specfleet_nodes:\n      hosts:\n"
        "        worker-a: {ansible_host: 127.0.0.99, specfleet_slots: 1}\n")
    (folder / "group_vars").symlink_to(REPO_ROOT / "inventory" / "local" / "group_vars")
    return folder


def _clashing_project(controller, tmp_path):
    folder = tmp_path / "specs" / "clash"
    folder.mkdir(parents=True)
    repo = controller.home / "repos" / "clawmarketing"
    (folder / "project.yml").write_text(f"repository: {repo}\nverify: ./run.sh test\n")
    (folder / "S01.md").write_text(spec_text("localhost", modifies=["backend/app.py"]))
    (folder / "S02.md").write_text(spec_text("worker-a", modifies=["backend/auth.py"]))
    (folder / "S03.md").write_text(spec_text("S03", modifies=["README.md"]))
    return tmp_path / "specs"


def test_spec_ids_that_are_inventory_or_reserved_host_names_are_refused(controller, tmp_path):
    specs = _clashing_project(controller, tmp_path)
    run = controller.playbook("playbooks/validate.yml", "-i", str(_inventory(tmp_path)), "-e", "project=clash",
                              "-e", f"specfleet_specs_root={specs}")
    assert run.returncode == 2, run.output
    for line in (
        "S01.md:2: field 'task_id': 'localhost' is Ansible's implicit controller host",
        "S02.md:2: field 'task_id': 'worker-a' is the name of the inventory host worker-a",
        "valid: S03",
        "nothing was queued",
    ):
        assert line in run.output, line


def test_dispatch_refuses_them_before_anything_is_stored(controller, tmp_path):
    specs = _clashing_project(controller, tmp_path)
    run = controller.playbook("playbooks/dispatch.yml", "-i", str(_inventory(tmp_path)), "-e", "project=clash",
                              "-e", f"specfleet_specs_root={specs}")
    assert run.returncode == 2, run.output
    assert "'worker-a' is the name of the inventory host worker-a" in run.output
    assert "Validate and queue specs/clash" in run.output
    if controller.db.exists():  # the feed refused: no spec row, queued or otherwise
        with sqlite3.connect(controller.db) as db:
            assert db.execute("SELECT COUNT(*) FROM specs").fetchone()[0] == 0
