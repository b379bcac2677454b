from __future__ import annotations

import pytest

from specfleet.model.spec import content_hash, parse_sections, parse_spec
from tests.conftest import spec_text

CHINESE = """---
task_id: S01-schedule-schema
project: demo
priority: 1
depends_on: []
modifies:
  - "./backend/schemas/post.py"
executor: glm
estimate: 5m
timeout: 30m
verify: python3 -m pytest -q tests/schemas/test_schedule.py
---

## 目标
在 backend/schemas/post.py 中新增 BatchScheduleRequest。

## 约束
- 最多 50 条

## 验收标准
- [ ] pytest tests/schemas/test_schedule.py 全绿

## 不要做
- 不改 router (S03 负责)
"""

ENGLISH_BODY = """
# S05 tests for the schema

## Goal:
Write tests for the batch schema.

### Details
Cover the 50-item limit.

## Acceptance Criteria
- [ ] `pytest -q tests/schemas/test_schedule.py` passes

```markdown
## Goal
this heading is inside a code fence and must not start a section
```

## Do not
- touch the router
"""


def parse(text, project="demo", defaults=None, stem="S01"):
    defaults = {"executor": "glm", **(defaults or {})}
    return parse_spec(f"specs/{project}/{stem}.md", text, project, defaults, stem=stem)


def test_chinese_spec_parses_with_every_field_resolved():
    spec, problems = parse(CHINESE, stem="S01-schedule-schema")
    assert problems == []
    assert spec.executor == "glm"
    assert spec.task_id == "S01-schedule-schema"
    assert spec.modifies == ("backend/schemas/post.py",)  # normalised
    assert (spec.estimate, spec.timeout, spec.priority, spec.retries) == (300, 1800, 1, 3)
    assert spec.sections["goal"].startswith("在 backend/schemas/post.py")
    assert "最多 50 条" in spec.sections["constraints"]
    assert "全绿" in spec.sections["acceptance"]
    assert "S03" in spec.sections["do_not"]


def test_english_sections_accept_case_colons_subheadings_and_ignore_fenced_headings():
    spec, problems = parse(spec_text("S05", body=ENGLISH_BODY), defaults={"verify": "pytest"})
    assert problems == []
    assert spec.sections["goal"].startswith("Write tests")
    assert "### Details" in spec.sections["goal"]
    assert "inside a code fence" in spec.sections["acceptance"]
    assert spec.sections["do_not"] == "- touch the router"


def test_task_id_defaults_to_the_file_stem_and_project_defaults_apply():
    text = spec_text(None, verify=None)
    spec, problems = parse(text, stem="S07-x", defaults={"verify": "make test", "estimate": "20m", "timeout": "2h",
                                                         "executor": "codex", "priority": 5, "retries": 1})
    assert problems == []
    assert (spec.task_id, spec.verify, spec.estimate, spec.timeout, spec.executor, spec.priority, spec.retries) == (
        "S07-x", "make test", 1200, 7200, "codex", 5, 1)


def problems_of(text, **kwargs):
    spec, problems = parse(text, **kwargs)
    assert spec is None
    return [(p.field, p.line, p.message) for p in problems]


@pytest.mark.parametrize(("text", "field", "line", "fragment"), [
    ("---\ntask_id: S01\nmodifies: [a.py\n---\n## Goal\nx\n", "modifies", 4, "YAML error"),
    ("---\ntask_id: S01\ntask_id: S02\nmodifies: [a]\n---\n", "task_id", 3, "duplicate key 'task_id' (first on line 2)"),
    ("no front matter\n", None, 1, "does not start with a '---'"),
    ("---\ntask_id: S01\nmodifies: [a]\n", None, 1, "never closed"),
    ("---\n- a\n- b\n---\n", None, 2, "must be a YAML mapping"),
    (spec_text(depends_on="S02"), "depends_on", 4, "must be of type array, not 'S02'"),
    (spec_text(modifies="src/app.py"), "modifies", 3, "must be of type array"),
    (spec_text(modifies=[]), "modifies", 3, "must not be empty"),
    (spec_text(priority=12), "priority", 4, "out of range"),
    (spec_text(priority="1"), "priority", 4, "must be of type integer"),
    (spec_text(retries=-1), "retries", 4, "out of range"),
    (spec_text(task_id="bad id!"), "task_id", 2, "not allowed"),
    (spec_text(task_id="-rf"), "task_id", 2, "not allowed"),
    (spec_text(task_id="S\n01"), "task_id", 2, "not allowed"),
    (spec_text(dependson=["S02"]), "dependson", 4, "is not a spec field"),
    (spec_text(project="other"), "project", 4, "folder of project 'demo'"),
    (spec_text(estimate="soon"), "estimate", 4, "not a duration"),
    (spec_text(estimate="1h", timeout="10m"), "timeout", 5, "shorter than the estimate"),
    (spec_text(verify=None), "verify", None, "project.yml sets no default verify"),
    (spec_text(depends_on=["S01"]), "depends_on", 4, "dependency cycle: S01 -> S01"),
    (spec_text(depends_on=["a b"]), "depends_on", 4, "not a valid task id"),
    (spec_text(modifies=["src/a.py", "./src/a.py"]), "modifies", 3, "repeats 'src/a.py'"),
    (spec_text(modifies=["../../etc/passwd"]), "modifies", 3, "escape the repository"),
    (spec_text(body="## Goal\nx\n"), "验收标准/Acceptance criteria", None, "section is missing"),
    (spec_text(body="## 目标\n\n## 验收标准\n- [ ] ok\n"), "目标/Goal", None, "section is empty"),
    (spec_text(body="## Goal\nx\n## Goal\ny\n## Acceptance criteria\nz\n"), "目标/Goal", None, "more than once"),
])
def test_each_problem_names_field_line_and_what_is_wrong(text, field, line, fragment):
    if field == "verify":
        found = problems_of(text)
    else:
        found = problems_of(text, defaults={"verify": "pytest"})
    assert any(f == field and ln == line and fragment in m for f, ln, m in found), found


def test_every_problem_of_a_file_is_reported_in_one_pass():
    text = spec_text(depends_on="S02", priority=99, estimate="never", dependson=[], body="## Goal\nx\n")
    fields = {f for f, _l, _m in problems_of(text, defaults={"verify": "pytest"})}
    assert {"depends_on", "priority", "estimate", "dependson", "验收标准/Acceptance criteria"} <= fields


def test_executors_are_checked_against_the_inventory():
    text = spec_text(executor="gpt-x")
    spec, problems = parse_spec("S01.md", text, "demo", {"verify": "x"}, executors=["codex", "glm"])
    assert [(p.field, p.line, p.message, p.hint) for p in problems] == [
        ("executor", 4, "'gpt-x' is not defined in the inventory", "defined: codex, glm")]
    spec, problems = parse_spec("S01.md", spec_text(), "demo", {"verify": "x"}, executors=["glm"])
    assert problems[0].field == "executor" and "is not set here" in problems[0].message


def test_unknown_field_suggests_the_closest_known_one():
    spec, problems = parse(spec_text(priorty=1), defaults={"verify": "pytest"})
    assert problems[0].hint == "did you mean 'priority'?"


def test_missing_task_id_with_unusable_file_name_says_both():
    spec, problems = parse(spec_text(None), stem="my spec", defaults={"verify": "x"})
    assert [p.field for p in problems] == ["task_id"]
    assert "file name 'my spec'" in problems[0].message


# (front matter, body) twice -> whether they hash the same
@pytest.mark.parametrize(("first", "second", "same"), [
    (({"a": 1}, "x\ny\n"), ({"a": 1}, "x  \ny\n\n\n"), True),   # trailing whitespace and lines
    (({"a": 1}, "x\ny"), ({"a": 2}, "x\ny"), False),               # front matter
    (({"a": 1}, "x\ny"), ({"a": 1}, "x\nz"), False),               # body
])
def test_content_hash_ignores_trailing_whitespace_but_not_content(first, second, same):
    assert (content_hash(*first) == content_hash(*second)) is same


def test_parse_sections_reports_duplicates():
    sections, headings, duplicates = parse_sections("## Goal\na\n## 目标\nb\n")
    assert duplicates == ["goal"] and [h for h, _ in headings] == ["Goal", "目标"]
