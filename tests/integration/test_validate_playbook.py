"""playbooks/validate.yml, run for real on the controller."""
from __future__ import annotations

from tests.conftest import spec_text


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
