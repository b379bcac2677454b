# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The gates of one round: what the agent's diff must pass before it is committed.

Every gate fails closed. Each reads the round's changes (``git diff --name-status``), the lines
they add (``git diff -U0``), the spec's ``modifies`` and test paths, and the verify output;
every ``modifies`` check uses :func:`paths.covers`, the same rule as the locks. The controller's
verify stage (``specfleet.land``) runs the same gates on a landed diff.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

try:  # inside the controller's package
    from .paths import covers
except ImportError:  # copied next to this file on a node
    from paths import covers  # type: ignore[no-redef]

STUB_PATTERNS = (
    (re.compile(r"\b(?:TODO|FIXME|XXX)\b"), "TODO/FIXME/XXX marker"),
    (re.compile(r"placeholder(?!\s*[=:]|[\"']\s*[=:])", re.I), "placeholder"),
    (re.compile(r"\bNotImplemented(?:Error)?\b"), "NotImplementedError"),
    (re.compile(r"\b(?:todo|unimplemented)!\s*\("), "todo!/unimplemented! macro"),
    (re.compile(r"not (?:yet )?implemented", re.I), "'not implemented'"),
    (re.compile(r"^\s*(?:pass|\.\.\.)\s*#\s*(?:stub|later)\b", re.I), "stub body"),
)
SKIP_PATTERNS = re.compile(
    r"@pytest\.mark\.(?:skip|skipif|xfail)\b|\bpytest\.(?:skip|xfail)\s*\(|@unittest\.(?:skip|expectedFailure)"
    r"|\bself\.skipTest\s*\(|\b(?:it|test|describe)\.(?:skip|todo)\s*\(|\bx(?:it|describe|test)\s*\("
    r"|@Disabled\b|@Ignore\b|\bt\.Skip(?:f|Now)?\s*\(|#\[ignore\]")
TEST_PATH = re.compile(
    r"(?:^|/)(?:tests?|__tests__|spec)/|(?:^|/)test_[^/]*\.py$|_test\.(?:py|go)$|\.(?:test|spec)\.[cm]?[jt]sx?$"
    r"|(?:^|/)conftest\.py$|Test\.java$|_spec\.rb$")
# "the verify command actually ran tests": a runner's own summary with a count > 0.
TEST_COUNTS = (
    re.compile(r"\b(\d+) passed\b"),                 # pytest, jest ("Tests: 3 passed"), vitest
    re.compile(r"^Ran (\d+) tests? in ", re.M),      # unittest
    re.compile(r"\b(\d+) passing\b"),                # mocha
    re.compile(r"test result: ok\. (\d+) passed"),   # cargo
    re.compile(r"^ok\s+\S+\s+[\d.]+s", re.M),        # go test (a package with tests)
    re.compile(r"\b(\d+) examples?, 0 failures"),    # rspec
    re.compile(r"Tests run: (\d+)"),                 # maven/junit
)


# -- diff analysis --------------------------------------------------------------------

@dataclass
class Change:
    status: str          # A, M, D, R, C, T
    path: str
    old_path: str | None = None


def parse_name_status(raw: str) -> list[Change]:
    """``git diff --name-status -z`` output -> changes (renames keep both paths)."""
    parts = raw.split("\x00")
    changes, index = [], 0
    while index < len(parts) and parts[index]:
        status = parts[index]
        if status[0] in "RC":
            changes.append(Change(status[0], parts[index + 2], parts[index + 1]))
            index += 3
        else:
            changes.append(Change(status[0], parts[index + 1]))
            index += 2
    return changes


def added_lines(unified_diff: str) -> dict[str, list[tuple[int, str]]]:
    """Added lines per file, with their line numbers in the new file, from ``git diff -U0``."""
    result: dict[str, list[tuple[int, str]]] = {}
    current = None
    line_no = 0
    for line in unified_diff.splitlines():
        if line.startswith("+++ "):
            target = line[4:]
            current = target[2:] if target.startswith("b/") else None
            if current is not None:
                result.setdefault(current, [])
        elif line.startswith("@@"):
            match = re.search(r"\+(\d+)", line)
            line_no = int(match.group(1)) if match else 0
        elif line.startswith("+") and current is not None:
            result[current].append((line_no, line[1:]))
            line_no += 1
    return result


def is_test_path(path: str, extra: list[str] | tuple[str, ...] = ()) -> bool:
    return bool(TEST_PATH.search(path)) or any(covers(p, path) for p in extra)


def tests_counted(output: str) -> int:
    """How many tests the output says ran (0: no recognised test summary)."""
    if re.search(r"\bno tests ran\b|collected 0 items", output):
        return 0
    # Per runner, its summaries add up (several test commands); runners overlap, so take the largest.
    best = 0
    for pattern in TEST_COUNTS:
        best = max(best, sum(int(m.group(1)) if m.groups() else 1 for m in pattern.finditer(output)))
    return best


Added = dict[str, list[tuple[int, str]]]


def _gate(name: str, problems: list[str], ok_detail: str) -> dict:
    return {"gate": name, "ok": not problems, "detail": "; ".join(problems[:20]) if problems else ok_detail,
            "problems": problems}


def diff_gate(changes: list[Change]) -> dict:
    return _gate("diff", [] if changes else ["the agent changed nothing (empty diff against the base)"],
                 f"{len(changes)} files changed")


def stubs_gate(added: Added) -> dict:
    """The first stub pattern an added line matches, per line (old lines never count)."""
    stubs = []
    for path, lines in sorted(added.items()):
        for number, text in lines:
            for pattern, label in STUB_PATTERNS:
                if pattern.search(text):
                    stubs.append(f"{path}:{number}: {label}: {text.strip()[:120]}")
                    break
    return _gate("stubs", stubs, "no TODO/FIXME/placeholder/stub in added lines")


def scope_gate(changes: list[Change], modifies: list[str], test_paths: list[str]) -> dict:
    """Both paths of a rename count: moving a file out of ``modifies`` changes the old place too."""
    outside = []
    for change in changes:
        for path in filter(None, (change.path, change.old_path)):
            if not any(covers(m, path) for m in modifies) and not any(covers(t, path) for t in test_paths):
                outside.append(path)
    return _gate("scope", [f"{p} is outside modifies" for p in sorted(set(outside))],
                 "every changed path is within modifies")


def tests_kept_gate(changes: list[Change], added: Added, test_paths: list[str]) -> dict:
    """No test file deleted (or renamed to a non-test name), no test skipped or disabled in added lines."""
    weakened = [f"{c.old_path or c.path} deleted (a test file)" for c in changes
                if c.status in "DR" and is_test_path(c.old_path or c.path, test_paths)
                and not (c.status == "R" and is_test_path(c.path, test_paths))]
    for path, lines in sorted(added.items()):
        for number, text in lines:
            if SKIP_PATTERNS.search(text) and (is_test_path(path, test_paths) or "test" in text.lower()):
                weakened.append(f"{path}:{number}: test skipped or disabled: {text.strip()[:120]}")
    return _gate("tests_kept", weakened, "no test deleted, skipped or disabled")


def tests_ran_gate(verify_output: str) -> dict:
    count = tests_counted(verify_output)
    return _gate("tests_ran", [] if count > 0 else ["the verify command ran no tests (no test summary with a count > 0)"],
                 f"verify ran {count} tests")


def run_gates(changes: list[Change], added: Added, modifies: list[str],
              test_paths: list[str], verify_output: str | None, require_tests: bool = True) -> list[dict]:
    """The gates of one round, in order; each ``{"gate", "ok", "detail", "problems"}``. Fail closed.

    ``tests_ran`` is only judged when verify ran (``verify_output`` is not None) and the spec
    requires tests.
    """
    gates = [diff_gate(changes), stubs_gate(added), scope_gate(changes, modifies, test_paths),
             tests_kept_gate(changes, added, test_paths)]
    if verify_output is not None and require_tests:
        gates.append(tests_ran_gate(verify_output))
    return gates
