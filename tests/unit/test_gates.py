"""The gates of a round as a table: changes, added lines, modifies, verify output -> each gate's verdict.

Pure cases (no git): :func:`specfleet.node.gates.run_gates` reads parsed changes and added
lines; test_runner.py covers the parsing of real ``git diff`` output.
"""
from __future__ import annotations

import pytest

from specfleet.node.gates import Change, run_gates

M, A, D, R = "M", "A", "D", "R"


def case(name: str, changes: list[tuple], added: dict[str, list[str]], modifies: list[str], *,
         tests: tuple[str, ...] = (), verify: str | None = "1 passed", require: bool = True,
         failing: tuple[str, ...] = (), says: str | None = None):
    """One row: what changed ((status, path[, old path])), the added lines per file, ``modifies``, the
    test paths, the verify output (None: verify did not run), ``require_tests`` -> the gates that fail
    (every other gate passes) and a fragment of the one failing gate's problems."""
    return pytest.param(changes, added, modifies, list(tests), verify, require, list(failing), says, id=name)


CASES = [
    case("clean change", [(M, "app.py")], {"app.py": ["X = 2"]}, ["app.py"], verify="3 passed"),
    case("empty diff", [], {}, ["app.py"], failing=("diff",), says="changed nothing"),
    case("TODO added", [(M, "app.py")], {"app.py": ["# TODO: later"]}, ["app.py"],
         failing=("stubs",), says="TODO/FIXME/XXX"),
    case("NotImplementedError", [(M, "app.py")], {"app.py": ["raise NotImplementedError"]}, ["app.py"],
         failing=("stubs",), says="NotImplementedError"),
    case("a placeholder attribute is no stub", [(M, "ui/f.jsx")], {"ui/f.jsx": ['<input placeholder="Name" />']},
         ["ui/"]),
    case("rust todo! macro", [(M, "src/lib.rs")], {"src/lib.rs": ["    todo!()"]}, ["src/"],
         verify="test result: ok. 2 passed", failing=("stubs",), says="todo!/unimplemented!"),
    case("outside modifies", [(M, "app.py"), (A, "other.py")], {"app.py": ["X = 3"], "other.py": ["Y = 1"]},
         ["app.py"], verify="2 passed", failing=("scope",), says="other.py is outside modifies"),
    case("a test path may change", [(A, "tests/test_y.py")], {"tests/test_y.py": ["assert True"]}, ["app.py"],
         tests=("tests/",)),
    case("glob in modifies", [(M, "src/a/b.py")], {"src/a/b.py": ["Z = 1"]}, ["src/**/*.py"]),
    case("a rename counts its old path", [(R, "lib.py", "app.py")], {}, ["lib.py"],
         failing=("scope",), says="app.py is outside modifies"),
    case("test file deleted", [(D, "tests/test_app.py")], {}, ["tests/"],
         failing=("tests_kept",), says="deleted (a test file)"),
    case("test renamed to a non-test", [(R, "lib/helper.py", "tests/test_app.py")], {}, ["tests/", "lib/"],
         failing=("tests_kept",), says="deleted (a test file)"),
    case("test renamed to a test", [(R, "tests/test_b.py", "tests/test_a.py")], {}, ["tests/"]),
    case("pytest skip added", [(M, "tests/test_app.py")], {"tests/test_app.py": ["@pytest.mark.skip"]}, ["tests/"],
         failing=("tests_kept",), says="skipped or disabled"),
    case("jest it.skip added", [(M, "web/a.test.js")], {"web/a.test.js": ["it.skip('x', () => {})"]}, ["web/"],
         verify="Tests: 4 passed", failing=("tests_kept",), says="skipped or disabled"),
    case("verify ran no tests", [(M, "app.py")], {"app.py": ["X = 2"]}, ["app.py"], verify="nothing to see",
         failing=("tests_ran",), says="ran no tests"),
    case("collected 0 items", [(M, "app.py")], {"app.py": ["X = 2"]}, ["app.py"],
         verify="collected 0 items\n1 passed", failing=("tests_ran",), says="ran no tests"),
    case("tests not required", [(M, "app.py")], {"app.py": ["X = 2"]}, ["app.py"], verify="nothing to see",
         require=False),
    case("verify did not run", [(M, "app.py")], {"app.py": ["X = 2"]}, ["app.py"], verify=None),
    case("several gates at once", [(A, "x.py")], {"x.py": ["# FIXME"]}, ["app.py"], verify="0 passed",
         failing=("stubs", "scope", "tests_ran")),
]


@pytest.mark.parametrize("changes,added,modifies,test_paths,verify,require,failing,says", CASES)
def test_gate_verdicts(changes, added, modifies, test_paths, verify, require, failing, says):
    parsed = [Change(*change) for change in changes]
    numbered = {path: list(enumerate(lines, start=1)) for path, lines in added.items()}
    gates = run_gates(parsed, numbered, modifies, test_paths, verify, require)
    judged = ["diff", "stubs", "scope", "tests_kept"] + (["tests_ran"] if verify is not None and require else [])
    assert [g["gate"] for g in gates] == judged
    assert [g["gate"] for g in gates if not g["ok"]] == failing
    for gate in gates:
        assert gate["ok"] is not bool(gate["problems"])
    if says:
        (gate,) = [g for g in gates if not g["ok"]]
        assert any(says in problem for problem in gate["problems"]), gate["problems"]
