from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specfleet.model.durations import format_duration, format_duration_words, format_elapsed, parse_duration
from specfleet.node.paths import LockIndex, covers, glob_regex, normalise_modifies, paths_overlap


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90), ("5m", 300), ("1h", 3600), ("1h30m", 5400), ("2d", 172800), (" 10M ", 600),
    (45, 45), ("120", 120), ("1h0m30s", 3630),
])
def test_durations_parse_to_seconds(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5x", "m5", "0m", 0, -5, "8d", True, 1.5, None, "1h-5m", "5 minutes"])
def test_bad_durations_are_refused_with_an_example(text):
    with pytest.raises(ValueError, match=r"duration|zero|maximum"):
        parse_duration(text)


@pytest.mark.parametrize("seconds", [1, 59, 60, 3599, 3600, 5400, 90061])
def test_format_duration_is_the_inverse(seconds):
    assert parse_duration(format_duration(seconds)) == seconds


# seconds -> a clock running (progress line), the same in status's column, a span in a report
WRITTEN = [
    (None, None, None, "n/a"),
    (0, "0s", "0m00s", "0 s"),
    (45, "45s", "0m45s", "45 s"),
    (59.6, "59s", "0m59s", "1 min"),
    (151, "2m31s", "2m31s", "2 min"),
    (3599, "59m59s", "59m59s", "59 min"),
    (3600, "1h00m", "1h00m", "1 h 00 min"),
    (3900, "1h05m", "1h05m", "1 h 05 min"),
    (90061, "25h01m", "25h01m", "25 h 01 min"),
]


@pytest.mark.parametrize(("seconds", "elapsed", "status_column", "words"), WRITTEN)
def test_seconds_are_written_one_way_per_use(seconds, elapsed, status_column, words):
    assert format_duration_words(seconds) == words
    if seconds is not None:
        assert format_elapsed(seconds) == elapsed
        assert format_elapsed(seconds, minutes_always=True) == status_column


@pytest.mark.parametrize(("raw", "normal"), [
    ("a.py", "a.py"), ("./a.py", "a.py"), ("././src//a.py", "src/a.py"), ("src/", "src/"),
    ("./src/./pkg/", "src/pkg/"), ("tests/**/test_*.py", "tests/**/test_*.py"), ("文档/说明.md", "文档/说明.md"),
])
def test_modifies_are_normalised_once(raw, normal):
    assert normalise_modifies(raw) == normal


@pytest.mark.parametrize(("raw", "why"), [
    ("/etc/passwd", "absolute"), ("~/x", "'~'"), ("../x", r"'\.\.'"), ("a/../../x", r"'\.\.'"),
    ("a;rm -rf /", "metacharacters"), ("$(id)", "metacharacters"), ("`id`", "metacharacters"),
    ("a|b", "metacharacters"), ("a\nb", "control"), ("a\x00b", "control"), ("a\tb", "control"),
    (".git/config", r"\.git"), ("-rf", "option"), ("src/--force", "option"), (".", "whole repository"),
    ("./", "whole repository"), ("", "non-empty"), (" a.py", "whitespace"), (5, "non-empty"), (None, "non-empty"),
    ("a'b", "metacharacters"), ('a"b', "metacharacters"), ("a\\b", "metacharacters"),
])
def test_hostile_or_escaping_paths_are_refused(raw, why):
    with pytest.raises(ValueError, match=why):
        normalise_modifies(raw)


@pytest.mark.parametrize(("first", "second", "overlap"), [
    ("a.py", "a.py", True), ("a.py", "b.py", False), ("src/", "src/a.py", True), ("src/a.py", "src/", True),
    ("src/", "srcx/a.py", False), ("src/", "src/pkg/", True), ("src/pkg/", "src/other/", False),
    ("src/*.py", "src/a.py", True), ("src/*.py", "src/pkg/a.py", False), ("src/**/*.py", "src/pkg/a.py", True),
    ("tests/test_?.py", "tests/test_1.py", True), ("tests/test_[ab].py", "tests/test_c.py", False),
    ("src/*.py", "src/pkg/", True),  # conservative: two patterns sharing a root may overlap
    ("docs/*.md", "src/*.py", False), ("src/app", "src/app.py", False),
])
def test_overlap_is_exact_for_files_and_conservative_for_patterns(first, second, overlap):
    assert paths_overlap(first, second) is overlap
    assert paths_overlap(second, first) is overlap


@pytest.mark.parametrize(("entry", "path", "covered"), [
    ("src/", "src/deep/er/file.py", True), ("src/", "srcfile.py", False),
])
def test_directory_entries_cover_everything_below(entry, path, covered):
    assert covers(entry, path) is covered


POOL = ["src/app.py", "src/util.py", "src/lib/", "src/lib/core.py", "src/*.py", "docs/*.md", "docs/guide.md",
        "README.md", "tests/", "tests/test_app.py", "src/**/core.py", "pkg/a.py", "pkg/b.py", "pkg/[ab].py"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(POOL), st.integers(0, 5)), max_size=25),
       st.sets(st.integers(0, 5), max_size=3), st.sampled_from(POOL), st.integers(0, 5))
def test_the_lock_index_finds_the_same_first_overlap_as_a_scan_in_order(entries, dropped, query, skip):
    index = LockIndex()
    for path, owner in entries:
        index.add(path, owner)
    for owner in dropped:
        index.drop(owner)
    scan = next(((path, owner) for path, owner in entries
                 if owner not in dropped and owner != skip and paths_overlap(query, path)), None)
    assert index.first(query, skip=skip) == scan


@pytest.mark.parametrize(("raw", "why"), [
    ("**", "whole repository"), ("*/**", "whole repository"), ("./**/*", "whole repository"),
    ("**/", "whole repository"), ("?/**", "whole repository"), ("src/***.py", "three or more"),
    ("a" * 4097, "4097 bytes long"), ("src/" + "x" * 256, "segment of 256 bytes"),
    ("src/" + "é" * 128, "segment of 256 bytes"), ("*a" * 9 + "b", "9 wildcards"),
])
def test_paths_past_filesystem_limits_and_globs_of_everything_are_refused(raw, why):
    with pytest.raises(ValueError, match=why):
        normalise_modifies(raw)


@pytest.mark.parametrize("raw", ["**/*.py", "*.md", "src/" + "x" * 255, "a/" * 2047 + "b", "*a" * 8 + "b"])
def test_paths_at_the_limits_are_kept(raw):
    assert normalise_modifies(raw)


# Each pattern has more than two wildcard runs, so covers() takes the backtracking-free
# matcher; the regex agrees on the short paths. The long paths took the regex minutes.
GLOB_CASES = [
    ("a/**/b/**/*.py", "a/x/b/y/z.py", True), ("a/**/b/**/*.py", "a/b/z.py", True),
    ("a/**/b/**/*.py", "a/x/c/z.py", False), ("**/x/**/y*z", "x/yz", True), ("**/x/**/y*z", "q/x/r/s/yaz", True),
    ("**/x/**/y*z", "q/x/r/s/ya/z", False), ("src/*/*/*.py", "src/a/b/c.py", True),
    ("src/*/*/*.py", "src/a/c.py", False), ("t/[!_]*/?/*", "t/ab/c/d", True), ("t/[!_]*/?/*", "t/_b/c/d", False),
    ("d/*a*a*b/", "d/xaab/deep/file", True),
]


@pytest.mark.parametrize(("pattern", "path", "expected"), GLOB_CASES)
def test_globs_with_many_wildcards_match_as_the_regex_does(pattern, path, expected):
    assert covers(pattern, path) is expected
    assert bool(glob_regex(pattern).match(path)) is expected


@pytest.mark.parametrize(("pattern", "path"), [
    ("**a**a**b", "a" * 4000), ("*a*a*a*a*b", "a" * 255), ("**/a**/a**/b", "a/" * 2000), ("*a*a*a*a*a*a*a*b", "a" * 4000),
])
def test_glob_bombs_are_answered_without_backtracking(pattern, path):
    assert covers(pattern, path) is False  # minutes with the regex; linear passes here
