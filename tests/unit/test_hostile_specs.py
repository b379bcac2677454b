"""Hostile specs are refused, clearly and within bounds (issue 19, part 4).

The corpus (``tests/hostile/corpus.py``, one row per case; ``bug_*`` rows are the
regressions of the measured failures) runs in one child process under an address-space
limit of 200 MB, with a 60 s deadline per case that only catches hangs: the bounds are
enforced by the kernel and a deadline, not by timing assertions. Each case goes through
``controller.feed`` into a fresh store, so "refused" also means "nothing stored".
Per-case time and peak RSS: ``benchmarks/bench_hostile_specs.py``.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT
from tests.hostile.corpus import CASES, Case

LIMIT_MB = 200
DEADLINE_S = 60
# A problem's text is about the file, the field and the rule; a hostile value is shown cut short.
MAX_PROBLEM_CHARS = 2000


@pytest.fixture(scope="module")
def results() -> dict[str, dict]:
    run = subprocess.run([sys.executable, str(REPO_ROOT / "tests" / "hostile" / "corpus.py"),
                          "--limit-mb", str(LIMIT_MB), "--deadline", str(DEADLINE_S)],
                         capture_output=True, text=True, timeout=DEADLINE_S * 4, check=False)
    assert run.returncode == 0, run.stderr[-4000:]
    rows = [json.loads(line) for line in run.stdout.splitlines()]
    return {row["name"]: row for row in rows}


def test_the_corpus_covers_every_measured_failure():
    names = [case.name for case in CASES]
    assert len(names) == len(set(names))
    assert len(CASES) >= 80
    bugs = {name for name in names if name.startswith("bug_")}
    for fragment in ("trailing_newline", "localhost", "inventory_host", "alias_bomb", "fifo", "dev_zero", "50_mb",
                     "globstar", "5000_character", "symlink_outside", "bom", "batch"):
        assert any(fragment in name for name in bugs), fragment


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_hostile_spec(case: Case, results: dict[str, dict]):
    row = results[case.name]
    if row.get("skipped"):
        pytest.skip("runs as root, which reads any file")
    assert "error" not in row, row["error"]
    problems = row["problems"]
    assert all(len(p["text"]) <= MAX_PROBLEM_CHARS for p in problems), [p["text"][:200] for p in problems]
    if case.outcome == "accepted":
        assert row["ok"] and not problems and row["stored"] >= 1, problems
    elif case.outcome == "ignored":
        assert row["ok"], problems
        assert case.file in row["ignored"], row["ignored"]
    else:
        assert not row["ok"]
        assert row["stored"] == 0 and not row["fed"]  # refused before anything was stored
        naming = [p for p in problems if p["path"].endswith("/" + case.file)]
        assert any(p["field"] == case.field and case.says in p["text"]
                   and (case.line is None or p["line"] == case.line) for p in naming), \
            f"expected {case.file} field {case.field!r} line {case.line} saying {case.says!r}; got " \
            + json.dumps([(p["path"].rsplit("/", 1)[-1], p["line"], p["field"], p["message"][:160]) for p in problems],
                         ensure_ascii=False)
