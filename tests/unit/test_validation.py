from __future__ import annotations

import pytest

from specfleet.model.project import load_project
from specfleet.validate.checks import validate_project
from tests.conftest import git, spec_text

EXECUTORS = ["glm", "codex"]


def validate(projects, name="demo", **kwargs):
    kwargs.setdefault("executors", EXECUTORS)
    kwargs.setdefault("default_executor", "glm")
    return validate_project(projects.specs_root, name, display_root="specs", **kwargs)


def texts(report):
    return [str(p) for p in report.problems]


def test_a_valid_project_reports_every_spec_and_skips_non_specs(projects):
    projects.project(**{
        "S01.md": spec_text("S01"),
        "S02.md": spec_text("S02", depends_on=["S01"], modifies=["src/util.py"]),
        "SHARED_CONTEXT.md": "# contract\n",
        "notes.md": "just notes\n",
        "_draft.md": spec_text("S03"),
    })
    report = validate(projects)
    assert report.ok, report.summary()
    assert report.valid_ids == ["S01", "S02"]
    assert set(report.ignored) == {"specs/demo/SHARED_CONTEXT.md", "specs/demo/notes.md", "specs/demo/_draft.md"}


# One project holding every broken file at once: each problem is reported, none hides another.
ACROSS_FILES = {
    "S01.md": spec_text("S01"),
    "S02.md": spec_text("S02", depends_on=["S09"]),
    "S03.md": spec_text("S03", executor="gpt-9"),
    "S04.md": spec_text("S01"),  # duplicate id
    "S05.md": "---\ntask_id: [\n---\n",
    "S06-forgot.md": "## Goal\nno front matter\n",
}


@pytest.mark.parametrize("problem", [
    "specs/demo/S02.md: field 'depends_on': 'S09' is not a spec of project demo",
    "specs/demo/S03.md:4: field 'executor': 'gpt-9' is not defined in the inventory (defined: codex, glm)",
    "specs/demo/S04.md: field 'task_id': 'S01' is the same id as in specs/demo/S01.md",
    "specs/demo/S01.md: field 'task_id': 'S01' is also used by specs/demo/S04.md",
    "specs/demo/S05.md:3: field 'task_id': YAML error",
    "specs/demo/S06-forgot.md:1: looks like a spec but has no YAML front matter",
])
def test_problems_across_files_are_all_reported(projects, problem):
    projects.project(**ACROSS_FILES)
    report = validate(projects)
    assert not report.ok
    assert problem in "\n".join(texts(report))


def test_no_file_of_a_broken_project_is_valid_and_nothing_is_queued(projects):
    projects.project(**ACROSS_FILES)
    report = validate(projects)
    # S02 and S03 are broken, S01 and S04 share an id: nothing of these is "valid".
    assert report.valid_ids == []
    assert "nothing was queued" in report.summary()


def test_valid_siblings_of_a_broken_spec_are_listed(projects):
    projects.project(**{"S01.md": spec_text("S01"), "S02.md": spec_text("S02", priority=77)})
    report = validate(projects)
    assert report.valid_ids == ["S01"]
    assert report.invalid_paths == {"specs/demo/S02.md"}
    assert "valid: S01" in report.summary()


def test_case_insensitive_duplicate_ids_collide(projects):
    projects.project(**{"a.md": spec_text("S01"), "b.md": spec_text("s01")})
    assert any("case-insensitively equal" in t for t in texts(validate(projects)))


def test_cycles_are_printed_as_paths_on_every_member(projects):
    projects.project(**{
        "S01.md": spec_text("S01", depends_on=["S03"]),
        "S02.md": spec_text("S02", depends_on=["S01"]),
        "S03.md": spec_text("S03", depends_on=["S02"]),
        "S04.md": spec_text("S04", depends_on=["S05"]),
        "S05.md": spec_text("S05", depends_on=["S04"]),
        "S06.md": spec_text("S06", depends_on=["S01"]),  # downstream of a cycle, not in it
    })
    report = validate(projects)
    cyc = [t for t in texts(report) if "dependency cycle" in t]
    assert "specs/demo/S01.md: field 'depends_on': dependency cycle: S01 -> S03 -> S02 -> S01" in cyc[0]
    assert sum("S01 -> S03 -> S02 -> S01" in t for t in cyc) == 3
    assert sum("S04 -> S05 -> S04" in t for t in cyc) == 2
    assert not any(t.startswith("specs/demo/S06.md") for t in cyc)


# modifies -> the problem it gives (every fragment in one problem of the spec), or None: valid.
MODIFIES = [
    (["src/new_module.py", "tests/", "tests/fixtures/", "src/**/*.py"], None),
    (["nowhere/deep/file.py"], ["specs/demo/S01.md: field 'modifies': 'nowhere/deep/file.py' points nowhere"]),
    (["src"], ["specs/demo/S01.md: field 'modifies': 'src' is a directory", "'src/'"]),
    (["src/app.py/"], ["specs/demo/S01.md: field 'modifies': 'src/app.py/' is a file"]),
    (["lib/", "lib/new.py"], None),  # a declared new directory
    (["vendor/*/x.py"], ["specs/demo/S01.md", "does not exist"]),
]


@pytest.mark.parametrize(("modifies", "problem"), MODIFIES)
def test_modifies_must_exist_on_the_base_branch_or_be_creatable(projects, modifies, problem):
    projects.project(**{"S01.md": spec_text("S01", modifies=modifies)})
    found = texts(validate(projects))
    if problem is None:
        assert not any(t.startswith("specs/demo/S01.md") for t in found), found
    else:
        assert any(t.startswith("specs/demo/S01.md") and all(f in t for f in problem) for t in found), found


def test_uncommitted_files_do_not_count_as_existing(projects):
    (projects.repo / "src" / "local_only.py").write_text("x")
    projects.project(**{"S01.md": spec_text("S01", modifies=["src/local_only.py", "scratch/x.py"])})
    (projects.repo / "scratch").mkdir()
    (projects.repo / "scratch" / "x.py").write_text("x")
    found = texts(validate(projects))
    # local_only.py is a new file in an existing directory: fine. scratch/ exists only on disk.
    assert len(found) == 1 and "'scratch/x.py' points nowhere" in found[0]


# project.yml ({repo}: the test repository, {root}: the test folder) -> fragments of one problem it gives.
PROJECT_YML = [
    ("repository: {root}/missing\nverify: x\n", ["specs/demo/project.yml: field 'repository':"]),
    ("repository: {repo}\nbase_branch: trunk\nverify: x\n", ["branch 'trunk' does not exist"]),
    ("repository: {repo}/src\nverify: x\n", ["is not the top of a git repository"]),  # inside a repository
    ("repository: https://git.example.invalid/demo.git\nverify: x\n", ["field 'transport'", "needs a local repository"]),
    ("repository: r\nverify: x\ntest_paths: [../outside/]\nverify_timeout: soon\n", ["field 'test_paths'"]),
    ("repository: r\nverify: x\ntest_paths: [../outside/]\nverify_timeout: soon\n", ["field 'verify_timeout'"]),
    ("repositry: x\n", ["field 'repositry': is not a project setting"]),
    ("repositry: x\n", ["field 'repository': is required"]),
    ("repository: ${{NO_SUCH_VARIABLE_X}}/r\n", ["uses ${NO_SUCH_VARIABLE_X}, which is not set"]),
    ("repository: {repo}\nexecutor: nope\nverify: x\n", ["project.yml: field 'executor': 'nope' is not defined"]),
    ("repository: {repo}\n", ["field 'verify': is missing"]),  # and no project default
]


@pytest.mark.parametrize(("config", "problem"), PROJECT_YML)
def test_project_yml_problems_name_the_field(projects, config, problem):
    projects.project(config=config.format(repo=projects.repo, root=projects.root), **{"S01.md": spec_text("S01")})
    found = texts(validate(projects))
    assert any(all(f in t for f in problem) for t in found), found


def test_remote_repositories_skip_the_tree_check_and_say_so(projects):
    projects.project(config="repository: https://git.example.invalid/demo.git\nverify: x\ntransport: remote\n",
                     **{"S01.md": spec_text("S01", modifies=["anything/at/all.py"])})
    report = validate(projects)
    assert report.ok and "not checked" in report.notes[0]


def test_repository_expands_specfleet_home(projects, monkeypatch):
    monkeypatch.setenv("SPECFLEET_HOME", str(projects.root))
    projects.project(config="repository: ${SPECFLEET_HOME}/repo\nverify: x\n", **{"S01.md": spec_text("S01")})
    report = validate(projects)
    assert report.ok, report.summary()
    assert report.config.repository == str(projects.repo)


def test_no_executor_anywhere(projects):
    projects.project(**{"S01.md": spec_text("S01")})
    assert any("field 'executor': is not set" in t for t in texts(validate(projects, default_executor=None)))


def test_an_unknown_project_suggests_the_closest(projects):
    projects.project("demo")
    report = validate(projects, "dmeo")
    assert "specs/dmeo: is not a directory (did you mean 'demo'?)" in texts(report)[0]


@pytest.mark.parametrize("hostile", ["../etc", "a;b", "x\ny", ""])
def test_hostile_project_names_are_refused(projects, hostile):
    projects.project("demo")
    assert "not a valid project name" in texts(validate(projects, hostile))[0]


def test_hostile_file_names_are_shown_escaped(projects):
    projects.project(**{"S01\nx.md": spec_text(None)})
    found = texts(validate(projects))
    assert any(t.startswith("specs/demo/S01\\nx.md:") for t in found), found


def test_non_utf8_and_oversized_files(projects):
    folder = projects.project()
    (folder / "S01.md").write_bytes(b"---\ntask_id: S01\xff\n---\n")
    (folder / "S02.md").write_text(spec_text("S02") + "x" * 300_000)
    found = texts(validate(projects))
    assert any("S01.md:2: is not UTF-8 text (byte 16)" in t for t in found), found
    assert any("S02.md: is" in t and "bytes" in t for t in found)


def test_validation_reads_the_committed_tree(projects):
    git(projects.repo, "rm", "-q", "src/util.py")
    git(projects.repo, "commit", "-q", "-m", "drop util")
    projects.project(**{"S01.md": spec_text("S01", modifies=["src/util.py"])})
    assert validate(projects).ok  # a new file in an existing directory


def test_a_thousand_specs_validate(projects):
    files = {f"T{i:04d}.md": spec_text(f"T{i:04d}", depends_on=[f"T{i - 1:04d}"] if i else [],
                                       modifies=[f"src/m{i}.py"]) for i in range(1000)}
    projects.project(**files)
    report = validate(projects)  # how fast is measured by benchmarks/bench_validate.py
    assert report.ok and len(report.valid_ids) == 1000


@pytest.mark.parametrize("key", ["base_branch", "push"])
def test_a_project_setting_ending_in_a_line_break_is_refused(tmp_path, key):
    """The schema's '$' lets Python's re match before a final line break: "main\\n" passed."""
    (tmp_path / "project.yml").write_text(f'repository: /srv/repo\n{key}: "main\\n"\n')
    config, problems = load_project(tmp_path, "demo", "specs/demo/project.yml")
    assert config is None and [(p.field, p.line) for p in problems] == [(key, 2)], problems
