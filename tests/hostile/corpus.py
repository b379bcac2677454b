"""The hostile spec corpus: one row per way a spec file can attack or break validation.

Each :class:`Case` is a project folder's spec files (or a ``setup`` that makes what cannot
be committed: a FIFO, a link to ``/dev/zero``, a sparse 50 MB file) and the outcome
validation must reach: refused with a problem naming the file and field (and line, when
given), accepted, or ignored as "not a spec". Cases named ``bug_*`` are the regression
tests of issue 19 part 4, one per measured failure.

Cases run through :func:`specfleet.ops.controller.feed`, the path ``specfleet_feed`` takes, into a
fresh state database: a refused case must leave nothing stored.

Run as a script, every case runs in this process, under an address-space limit and with a
deadline per case, and one JSON line per case is printed (used by
``tests/unit/test_hostile_specs.py`` and ``benchmarks/bench_hostile_specs.py``)::

    .venv/bin/python tests/hostile/corpus.py [--limit-mb 200] [--deadline 60] [--only NAME]
"""
from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

PROJECT = "hostile"
GROUPS = {"all": ["node-1", "node-2"], "ungrouped": [], "specfleet_nodes": ["node-1", "node-2"], "gpu": ["node-2"]}
BODY = "\n## Goal\nDo the thing.\n\n## Acceptance criteria\n- [ ] `pytest -q` passes\n"
MAX_SPEC_BYTES = 256 * 1024

# What the shared repository holds: files, and committed symbolic links (name -> target).
REPO_FILES = {"src/app.py": "print('app')\n", "src/util.py": "\n", "tests/test_app.py": "def test_x():\n    pass\n",
              "README.md": "# demo\n", "docs/guide.md": "guide\n"}
REPO_LINKS = {"passwd_link": "/etc/passwd", "etc_link": "/etc", "up_link": "../..", "inner_link": "src/app.py",
              "chain_a": "chain_b", "chain_b": "src/../../outside", "git_link": ".git/hooks",
              "loop_a": "loop_b", "loop_b": "loop_a", "docs_link": "docs"}

def bomb(key: str) -> str:
    """A billion-laughs expansion held entirely inside ``key``'s value (first alias on the key's line + 2)."""
    rows = ["  - &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"]
    rows += [f"  - &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8)]
    return f"{key}:\n" + "".join(rows)


BOMB = ('a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
        + "".join(f"{chr(98 + i)}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8)))


def spec(front: str = "task_id: S01\nmodifies: [src/app.py]\n", body: str = BODY) -> str:
    """A spec file with ``front`` (raw YAML lines) as its front matter."""
    return "---\n" + front + "---\n" + body


def fields(**values: str) -> str:
    """A valid front matter with some lines replaced or added (values are raw YAML)."""
    front = {"task_id": "S01", "modifies": "[src/app.py]"}
    front.update(values)
    return spec("".join(f"{k}: {v}\n" for k, v in front.items() if v is not None))


@dataclass(frozen=True)
class Case:
    name: str
    files: dict[str, str | bytes] = field(default_factory=dict)
    outcome: str = "refused"        # refused | accepted | ignored
    field: str | None = None        # the field the problem names (None: the whole file)
    says: str = ""                  # a substring of the problem's text
    line: int | None = None         # the line the problem names, when known
    file: str = "S01.md"            # the file the problem names (or that is accepted/ignored)
    setup: Callable[[Path, Path], None] | None = None  # (project folder, scratch dir) -> None
    as_root: bool = True            # False: meaningless when run as root (root reads anything)


def _fifo(folder: Path, _scratch: Path) -> None:
    os.mkfifo(folder / "S01.md")


def _dev_zero(folder: Path, _scratch: Path) -> None:
    os.symlink("/dev/zero", folder / "S01.md")


def _outside(folder: Path, scratch: Path) -> None:
    (scratch / "outside.md").write_text(spec())
    os.symlink(scratch / "outside.md", folder / "S01.md")


def _inside(folder: Path, _scratch: Path) -> None:
    pool = folder.parent / "_pool"
    pool.mkdir()
    (pool / "S01.md").write_text(spec())
    os.symlink("../_pool/S01.md", folder / "S01.md")


def _fifo_inside(folder: Path, _scratch: Path) -> None:
    pool = folder.parent / "_pool"
    pool.mkdir()
    os.mkfifo(pool / "S01.md")
    os.symlink("../_pool/S01.md", folder / "S01.md")


def _dangling(folder: Path, _scratch: Path) -> None:
    os.symlink("missing.md", folder / "S01.md")


def _self_loop(folder: Path, _scratch: Path) -> None:
    os.symlink("S01.md", folder / "S01.md")


def _directory(folder: Path, _scratch: Path) -> None:
    (folder / "S01.md").mkdir()
    (folder / "S01.md" / "x").write_text("x")
    (folder / "S02.md").write_text(fields(task_id="S02"))


def _sparse(size: int) -> Callable[[Path, Path], None]:
    def make(folder: Path, _scratch: Path) -> None:
        with open(folder / "S01.md", "wb") as handle:
            handle.write(spec().encode())
            handle.truncate(size)  # sparse: no disk, but stat and read see every byte
    return make


def _unreadable(folder: Path, _scratch: Path) -> None:
    (folder / "S01.md").write_text(spec())
    os.chmod(folder / "S01.md", 0)


def _socket(folder: Path, _scratch: Path) -> None:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(folder / "S01.md"))
    server.close()


def _deep_block(depth: int) -> str:
    return "tags:\n" + "".join("  " * level + "-\n" for level in range(1, depth)) + "  " * depth + "- x\n"


CASES: list[Case] = [
    # --- task ids ---------------------------------------------------------------
    Case("bug_id_with_trailing_newline", {"S01.md": fields(task_id='"S01\\n"')}, field="task_id",
         says="'S01\\n' has characters or a length that are not allowed", line=2),
    Case("id_newline_in_file_name", {"S01\n.md": spec("modifies: [src/app.py]\n")}, field="task_id",
         says="is missing and the file name 'S01\\n' is not a valid task id", file="S01\\n.md"),
    Case("id_trailing_space", {"S01.md": fields(task_id='"S01 "')}, field="task_id", says="not allowed", line=2),
    Case("id_leading_space", {"S01.md": fields(task_id='" S01"')}, field="task_id", says="not allowed"),
    Case("id_cyrillic_lookalike", {"S01.md": fields(task_id="\u042101")}, field="task_id", says="not allowed"),
    Case("id_fullwidth_digit", {"S01.md": fields(task_id="S\uff101")}, field="task_id", says="not allowed"),
    Case("id_zero_width_space", {"S01.md": fields(task_id='"S01\\u200b"')}, field="task_id", says="not allowed"),
    Case("id_path_traversal", {"S01.md": fields(task_id="../x")}, field="task_id", says="not allowed"),
    Case("id_slash", {"S01.md": fields(task_id="a/b")}, field="task_id", says="not allowed"),
    Case("id_backslash", {"S01.md": fields(task_id='"a\\\\b"')}, field="task_id", says="not allowed"),
    Case("id_shell_metacharacters", {"S01.md": fields(task_id='"S01;rm -rf ~"')}, field="task_id", says="not allowed"),
    Case("id_leading_dash", {"S01.md": fields(task_id="-S01")}, field="task_id", says="not allowed"),
    Case("id_65_characters", {"S01.md": fields(task_id="S" * 65)}, field="task_id", says="not allowed"),
    Case("id_64_characters_accepted", {"S01.md": fields(task_id="S" * 64)}, outcome="accepted"),
    Case("id_100k_characters", {"S01.md": fields(task_id="S" * 100_000)}, field="task_id", says="not allowed"),
    Case("id_empty_string", {"S01.md": fields(task_id='""')}, field="task_id", says="not allowed"),
    Case("id_null", {"S01.md": fields(task_id="")}, field="task_id", says="must be of type string"),
    Case("id_numeric", {"S01.md": fields(task_id="123")}, field="task_id", says="must be of type string"),
    Case("id_float", {"S01.md": fields(task_id="1.5")}, field="task_id", says="must be of type string"),
    Case("id_list", {"S01.md": fields(task_id="[S01]")}, field="task_id", says="must be of type string"),
    Case("bug_id_localhost_runs_on_controller", {"S01.md": fields(task_id="localhost")}, field="task_id",
         says="implicit controller host", line=2),
    Case("id_localhost_other_case", {"S01.md": fields(task_id="LocalHost")}, field="task_id", says="controller"),
    Case("id_loopback_address", {"S01.md": fields(task_id="127.0.0.1")}, field="task_id", says="controller"),
    Case("id_all", {"S01.md": fields(task_id="all")}, field="task_id", says="group of every host"),
    Case("id_ungrouped", {"S01.md": fields(task_id="ungrouped")}, field="task_id", says="in no other group"),
    Case("bug_id_equal_to_inventory_host_stored_before_refused", {"S01.md": fields(task_id="node-1")},
         field="task_id", says="inventory host node-1", line=2),
    Case("id_inventory_group", {"S01.md": fields(task_id="gpu")}, field="task_id", says="inventory group gpu"),
    Case("id_specfleet_group", {"S01.md": fields(task_id="specfleet_specs")}, field="task_id", says="group"),
    Case("id_integration_branch", {"S01.md": fields(task_id="integration")}, field="task_id",
         says="integration branch"),
    Case("id_double_dot", {"S01.md": fields(task_id="S01..x")}, field="task_id", says="git refuses"),
    Case("id_dot_lock", {"S01.md": fields(task_id="S01.lock")}, field="task_id", says="git refuses"),
    Case("id_trailing_dot", {"S01.md": fields(task_id="S01.")}, field="task_id", says="git refuses"),
    Case("id_reserved_from_file_name", {"localhost.md": spec("modifies: [src/app.py]\n")}, field="task_id",
         says="controller", file="localhost.md"),
    Case("id_case_insensitive_duplicate", {"S01.md": fields(), "s01.md": fields(task_id="s01")}, field="task_id",
         says="case-insensitively equal", file="s01.md"),
    Case("bug_batch_with_one_bad_spec_stores_nothing",
         {"S01.md": fields(), "S02.md": fields(task_id="localhost", modifies="[src/util.py]")},
         field="task_id", says="controller", file="S02.md"),
    # --- depends_on ---------------------------------------------------------------
    Case("deps_cycle", {"S01.md": fields(depends_on="[S02]"),
                        "S02.md": fields(task_id="S02", depends_on="[S01]", modifies="[src/util.py]")},
         field="depends_on", says="dependency cycle: S01 -> S02 -> S01"),
    Case("deps_self", {"S01.md": fields(depends_on="[S01]")}, field="depends_on", says="cannot depend on itself"),
    Case("deps_unknown", {"S01.md": fields(depends_on="[S99]")}, field="depends_on", says="'S99' is not a spec"),
    Case("deps_not_a_list", {"S01.md": fields(depends_on="S02")}, field="depends_on", says="must be of type array"),
    Case("deps_mapping", {"S01.md": fields(depends_on="{S02: 1}")}, field="depends_on", says="must be of type array"),
    Case("deps_number_entry", {"S01.md": fields(depends_on="[1]")}, field="depends_on", says="must be of type string"),
    Case("deps_null_entry", {"S01.md": fields(depends_on="[null]")}, field="depends_on", says="must be of type string"),
    Case("deps_entry_with_newline", {"S01.md": fields(depends_on='["S02\\n"]')}, field="depends_on",
         says="'S02\\n' is not a valid task id"),
    Case("deps_repeated", {"S01.md": fields(depends_on="[S02, S02]")}, field="depends_on", says="same entry twice"),
    Case("bug_deps_alias_bomb", {"S01.md": spec("task_id: S01\nmodifies: [src/app.py]\n" + bomb("depends_on"))},
         field="depends_on", says="uses the YAML alias '*a'", line=6),
    Case("deps_huge_list", {"S01.md": fields(depends_on="[" + ",".join(f"T{n}" for n in range(20_000)) + "]")},
         field="depends_on", says="lists more than 1000 entries", line=4),
    Case("deps_list_filling_the_size_limit", {"S01.md": fields(depends_on="[" + "a," * 120_000 + "a]")},
         field="depends_on", says="lists more than 1000 entries", line=4),
    Case("deps_1000_entries_accepted_by_the_parser", {"S01.md": fields(depends_on="[" + ",".join(
        f"S{n:04d}" for n in range(2, 1002)) + "]")}, field="depends_on", says="is not a spec of project hostile"),
    # --- tags -----------------------------------------------------------------------
    Case("bug_tags_alias_bomb", {"S01.md": spec("task_id: S01\nmodifies: [src/app.py]\n" + bomb("tags"))},
         field="tags", says="aliases are not allowed", line=6),
    Case("tags_anchor_without_alias_accepted", {"S01.md": fields(tags="&t [backend, api]")}, outcome="accepted"),
    # --- modifies -------------------------------------------------------------------
    Case("mod_absolute", {"S01.md": fields(modifies="[/etc/passwd]")}, field="modifies", says="is absolute", line=3),
    Case("mod_dotdot", {"S01.md": fields(modifies="[../x]")}, field="modifies", says="would escape"),
    Case("mod_dotdot_inside", {"S01.md": fields(modifies="[src/../../x]")}, field="modifies", says="would escape"),
    Case("bug_mod_globstar_is_whole_repository", {"S01.md": fields(modifies='["**"]')}, field="modifies",
         says="would claim the whole repository"),
    Case("mod_star_slash_globstar", {"S01.md": fields(modifies='["*/**"]')}, field="modifies",
         says="whole repository"),
    Case("mod_dot_globstar_star", {"S01.md": fields(modifies='["./**/*"]')}, field="modifies",
         says="whole repository"),
    Case("mod_globstar_directory", {"S01.md": fields(modifies='["**/"]')}, field="modifies",
         says="whole repository"),
    Case("mod_class_star", {"S01.md": fields(modifies='["[a-z]*/**"]')}, field="modifies", says="whole repository"),
    Case("mod_dot_directory", {"S01.md": fields(modifies='["./"]')}, field="modifies", says="names the whole"),
    Case("mod_glob_bomb", {"S01.md": fields(modifies='["src/*a*a*a*a*a*a*a*a*a*b"]')}, field="modifies",
         says="has 10 wildcards; a glob has at most 8"),
    Case("mod_glob_triple_star", {"S01.md": fields(modifies='["src/***.py"]')}, field="modifies",
         says="three or more '*'"),
    Case("mod_glob_accepted", {"S01.md": fields(modifies='["tests/**/test_*.py", "src/*.py"]')},
         outcome="accepted"),
    Case("mod_nul", {"S01.md": fields(modifies='["src/a\\0b"]')}, field="modifies", says="control characters"),
    Case("mod_newline", {"S01.md": fields(modifies='["src/a\\nb"]')}, field="modifies", says="control characters"),
    Case("bug_mod_5000_character_path", {"S01.md": fields(modifies="[" + "src/" + "a/" * 2500 + "x.py]")},
         field="modifies", says="5008 bytes long; a path is at most 4096 bytes"),
    Case("mod_segment_over_name_max", {"S01.md": fields(modifies="[src/" + "x" * 300 + ".py]")},
         field="modifies", says="segment of 303 bytes"),
    Case("mod_segment_multibyte_over_name_max", {"S01.md": fields(modifies="[src/" + "\u00e9" * 200 + "]")},
         field="modifies", says="segment of 400 bytes"),
    Case("mod_segment_255_bytes_accepted", {"S01.md": fields(modifies="[src/" + "x" * 255 + "]")},
         outcome="accepted"),
    Case("bug_mod_committed_symlink_outside", {"S01.md": fields(modifies="[passwd_link]")}, field="modifies",
         says="symbolic link 'passwd_link' -> '/etc/passwd' committed on main, which leaves the repository"),
    Case("mod_symlink_directory_outside", {"S01.md": fields(modifies="[etc_link/passwd]")}, field="modifies",
         says="leaves the repository"),
    Case("mod_symlink_relative_outside", {"S01.md": fields(modifies="[up_link/x.py]")}, field="modifies",
         says="'up_link' -> '../..'"),
    Case("mod_symlink_chain_outside", {"S01.md": fields(modifies="[chain_a]")}, field="modifies",
         says="'chain_b' -> 'src/../../outside'"),
    Case("mod_symlink_into_git", {"S01.md": fields(modifies="[git_link/pre-commit]")}, field="modifies",
         says="leads into .git"),
    Case("mod_symlink_loop", {"S01.md": fields(modifies="[loop_a]")}, field="modifies", says="loop of links"),
    Case("mod_glob_under_symlink_outside", {"S01.md": fields(modifies='["etc_link/*.conf"]')}, field="modifies",
         says="leaves the repository"),
    Case("mod_symlink_inside_accepted", {"S01.md": fields(modifies="[inner_link]")},
         outcome="accepted"),
    Case("mod_number", {"S01.md": fields(modifies="[123]")}, field="modifies", says="must be of type string"),
    Case("mod_mapping_entry", {"S01.md": fields(modifies="[{a: b}]")}, field="modifies",
         says="must be of type string"),
    Case("mod_not_a_list", {"S01.md": fields(modifies="src/app.py")}, field="modifies", says="must be of type array"),
    Case("mod_empty_list", {"S01.md": fields(modifies="[]")}, field="modifies", says="must not be empty"),
    Case("mod_missing", {"S01.md": spec("task_id: S01\n")}, field="modifies", says="is required"),
    Case("mod_whitespace", {"S01.md": fields(modifies='["   "]')}, field="modifies", says="non-empty string"),
    Case("mod_git_dir", {"S01.md": fields(modifies="[.git/config]")}, field="modifies", says="points into .git"),
    Case("mod_tilde", {"S01.md": fields(modifies='["~/x"]')}, field="modifies", says="starts with '~'"),
    Case("mod_option", {"S01.md": fields(modifies="[-rf]")}, field="modifies", says="read as an option"),
    Case("mod_shell_metacharacters", {"S01.md": fields(modifies='["src/$(id).py"]')}, field="modifies",
         says="shell metacharacters"),
    Case("mod_huge_list", {"S01.md": fields(modifies="[" + ",".join(f"src/f{n}.py" for n in range(5000)) + "]")},
         field="modifies", says="lists more than 1000 entries", line=3),
    # --- YAML -------------------------------------------------------------------------
    Case("yaml_billion_laughs_in_unknown_key", {"S01.md": spec("task_id: S01\nmodifies: [src/app.py]\n" + BOMB)},
         field="b", says="aliases are not allowed", line=5),
    Case("yaml_single_alias", {"S01.md": spec("task_id: S01\nx: &m [src/app.py]\nmodifies: *m\n")},
         field="modifies", says="uses the YAML alias '*m'", line=4),
    Case("yaml_merge_key", {"S01.md": spec("base: &b {priority: 1}\ntask_id: S01\nmodifies: [src/app.py]\n<<: *b\n")},
         field="<<", says="alias", line=5),
    Case("yaml_flow_nesting_10k", {"S01.md": fields(tags="[" * 10_000 + "]" * 10_000)}, field="tags",
         says="YAML error: exceeded maximum nesting depth", line=4),  # libyaml's own limit (1,000) speaks first
    Case("yaml_flow_nesting_20", {"S01.md": fields(tags="[" * 20 + "]" * 20)}, field="tags",
         says="nests lists or mappings more than 16 levels deep", line=4),
    Case("yaml_5000_top_level_keys", {"S01.md": spec("".join(f"k{n}: {n}\n" for n in range(5000)))},
         says="lists more than 1000 entries", line=1002),
    Case("yaml_block_nesting_50", {"S01.md": spec("task_id: S01\nmodifies: [src/app.py]\n" + _deep_block(50))},
         field="tags", says="more than 16 levels deep"),
    Case("yaml_mapping_nesting_100", {"S01.md": fields(x="{a: " * 100 + "1" + "}" * 100)}, field="x",
         says="more than 16 levels deep"),
    Case("yaml_python_object_tag", {"S01.md": fields(modifies="!!python/object/apply:os.system [id]")},
         field="modifies", says="could not determine a constructor", line=3),
    Case("yaml_python_name_tag", {"S01.md": fields(verify="!!python/name:os.system")}, field="verify",
         says="could not determine a constructor"),
    Case("yaml_local_tag", {"S01.md": fields(task_id="!secret S01")}, field="task_id",
         says="could not determine a constructor"),
    Case("yaml_binary_tag", {"S01.md": fields(verify="!!binary aGk=")}, field="verify",
         says="must be of type string"),
    Case("yaml_timestamp", {"S01.md": fields(estimate="2024-01-01")}, field="estimate",
         says="must be of type string or integer"),
    Case("yaml_huge_integer", {"S01.md": fields(priority="9" * 4000)}, field="priority", says="out of range"),
    Case("yaml_infinity", {"S01.md": fields(priority=".inf")}, field="priority", says="must be of type integer"),
    Case("yaml_duplicate_keys", {"S01.md": spec("task_id: S01\nmodifies: [src/app.py]\ntask_id: S02\n")},
         field="task_id", says="duplicate key 'task_id' (first on line 2)", line=4),
    Case("yaml_complex_key", {"S01.md": spec("task_id: S01\nmodifies: [src/app.py]\n? [a, b]\n: 1\n")},
         says="mapping key must be a plain value", line=4),
    Case("yaml_list_front_matter", {"S01.md": spec("- task_id\n- S01\n")}, says="must be a YAML mapping", line=2),
    Case("yaml_scalar_front_matter", {"S01.md": spec("just some words\n")}, says="must be a YAML mapping"),
    Case("yaml_tab_indentation", {"S01.md": spec("task_id: S01\nmodifies:\n\t- src/app.py\n")},
         field="modifies", says="YAML error: found character that cannot start any token", line=4),
    Case("yaml_missing_closing_line", {"S01.md": "---\ntask_id: S01\nmodifies: [src/app.py]\n" + BODY},
         says="front matter is never closed", line=1),
    Case("bug_utf8_bom_reported_as_no_front_matter", {"S01.md": "\ufeff" + spec()}, outcome="accepted"),
    Case("yaml_two_boms", {"S01.md": "\ufeff\ufeff" + spec()}, says="has no YAML front matter", line=1),
    Case("yaml_nul_byte", {"S01.md": spec() + "\x00"}, says="contains NUL bytes", line=1),
    Case("yaml_invalid_utf8", {"S01.md": spec().encode() + b"\n\xff\xfe"}, says="is not UTF-8 text", line=12),
    Case("yaml_overlong_utf8", {"S01.md": b"---\ntask_id: S01\xc0\xaf\n---\n"}, says="is not UTF-8 text", line=2),
    Case("yaml_utf16", {"S01.md": spec().encode("utf-16")}, says="is not UTF-8 text (byte 0)"),
    Case("yaml_huge_scalar_in_title_accepted", {"S01.md": fields(title="x" * 200_000)}, outcome="accepted"),
    Case("yaml_huge_duration", {"S01.md": fields(timeout='"' + "1" * 100_000 + '"')}, field="timeout",
         says="is not a duration"),
    Case("yaml_integer_over_python_digit_limit", {"S01.md": fields(timeout="1" * 100_000)}, field="timeout",
         says="as int (Exceeds the limit", line=4),
    Case("yaml_impossible_date", {"S01.md": fields(estimate="2024-13-45")}, field="estimate",
         says="cannot read '2024-13-45' as timestamp", line=4),
    Case("yaml_crlf_accepted", {"S01.md": spec().replace("\n", "\r\n")}, outcome="accepted"),
    Case("yaml_unicode_goal_accepted", {"S01.md": spec(body="\n## 目标\n把 🚀 加到标题里。\n\n## 验收标准\n- [ ] 通过\n")},
         outcome="accepted"),
    # --- files ------------------------------------------------------------------------
    Case("bug_fifo_hangs_validation", setup=_fifo, says="is a named pipe (FIFO), not a regular file"),
    Case("bug_symlink_to_dev_zero", setup=_dev_zero, says="symbolic link to '/dev/zero', outside the specs folder"),
    Case("file_symlink_outside_specs", setup=_outside, says="outside the specs folder"),
    Case("file_symlink_inside_specs_accepted", setup=_inside, outcome="accepted"),
    Case("file_symlink_to_fifo_inside_specs", setup=_fifo_inside, says="named pipe"),
    Case("file_dangling_symlink", setup=_dangling, says="cannot be read: No such file or directory"),
    Case("file_symlink_to_itself", setup=_self_loop, says="cannot be read: Too many levels of symbolic links"),
    Case("file_directory_named_md", setup=_directory, outcome="ignored"),
    Case("bug_50_mb_spec_read_whole", setup=_sparse(50 * 2**20), says="is 52428800 bytes; a spec is at most 262144"),
    Case("file_one_byte_over_limit", setup=_sparse(MAX_SPEC_BYTES + 1), says="is 262145 bytes"),
    Case("file_at_the_limit_accepted", {"S01.md": spec() + " " * (MAX_SPEC_BYTES - len(spec()))},
         outcome="accepted"),
    Case("file_empty", {"S01.md": ""}, says="looks like a spec but is empty", line=1),
    Case("file_unreadable", setup=_unreadable, says="cannot be read: Permission denied", as_root=False),
    Case("file_socket", setup=_socket, says="is a socket, not a regular file"),
    # --- missing and wrong fields -------------------------------------------------------
    Case("missing_task_id_and_bad_file_name", {"my spec.md": spec("modifies: [src/app.py]\n")}, field="task_id",
         says="is missing and the file name 'my spec'", file="my spec.md"),
    Case("missing_goal_section", {"S01.md": spec(body="\n## Acceptance criteria\n- ok\n")}, field="目标/Goal",
         says="section is missing"),
    Case("missing_acceptance_section", {"S01.md": spec(body="\n## Goal\nx\n")}, field="验收标准/Acceptance criteria",
         says="section is missing"),
    Case("empty_verify", {"S01.md": fields(verify='""')}, field="verify", says="must not be empty"),
    Case("unknown_key_typo", {"S01.md": fields(dependson="[]")}, field="dependson", says="did you mean 'depends_on'"),
    Case("project_mismatch", {"S01.md": fields(project="other")}, field="project", says="folder of project"),
    Case("unknown_executor", {"S01.md": fields(executor="gpt-x")}, field="executor", says="not defined"),
    Case("priority_out_of_range", {"S01.md": fields(priority="99")}, field="priority", says="out of range"),
    Case("retries_string", {"S01.md": fields(retries="lots")}, field="retries", says="must be of type integer"),
]


def make_repository(path: Path) -> Path:
    """The repository every case's project points at, with hostile links committed."""
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@x.invalid", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@x.invalid")
    path.mkdir(parents=True)
    for name, content in REPO_FILES.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(content)
    for name, target in REPO_LINKS.items():
        os.symlink(target, path / name)
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "hostile"]):
        subprocess.run(["git", "-C", str(path), *args], check=True, env=env, capture_output=True)
    return path


def run_case(case: Case, scratch: Path, repository: Path) -> dict:
    """Build the case's project under ``scratch`` and feed it; what validation said, as plain data."""
    from specfleet.ops import controller

    specs_root = scratch / "specs"
    folder = specs_root / PROJECT
    folder.mkdir(parents=True)
    (folder / "project.yml").write_text(f"repository: {repository}\nbase_branch: main\nverify: pytest -q\n")
    for name, content in case.files.items():
        (folder / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    if case.setup:
        case.setup(folder, scratch)
    db = scratch / "state.db"
    report, fed = controller.feed(PROJECT, db=str(db), specs_root=str(specs_root), executors=["glm"],
                                  default_executor="glm", inventory_groups=GROUPS)
    stored = 0
    if db.exists():
        import sqlite3
        with sqlite3.connect(db) as connection:
            stored = connection.execute("SELECT COUNT(*) FROM specs").fetchone()[0]
    return {"ok": report.ok, "stored": stored, "fed": fed is not None,
            "problems": [p.as_dict() for p in report.problems],
            "ignored": {path.rsplit("/", 1)[-1]: why for path, why in report.ignored.items()},
            "valid": report.valid_ids}


class Deadline(Exception):
    pass


def _peak_rss_reset() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) so each case's peak is its own."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _peak_rss_kb() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def run_all(cases: list[Case], deadline: float) -> list[dict]:
    """Every case in this process, each with a SIGALRM deadline that only catches hangs."""
    def alarm(_signum, _frame):
        raise Deadline()

    signal.signal(signal.SIGALRM, alarm)
    results = []
    with tempfile.TemporaryDirectory(prefix="specfleet-hostile-") as tmp:
        repository = make_repository(Path(tmp) / "repo")
        # Warm up imports and caches so the first case is not charged for them.
        run_case(Case("warm-up", {"S01.md": spec()}), Path(tmp) / "warm-up", repository)
        for number, case in enumerate(cases):
            scratch = Path(tmp) / f"case-{number}"
            scratch.mkdir()
            row = {"name": case.name, "skipped": not case.as_root and os.geteuid() == 0}
            if row["skipped"]:
                results.append(row)
                continue
            _peak_rss_reset()
            start = time.perf_counter()
            signal.setitimer(signal.ITIMER_REAL, deadline)
            try:
                row.update(run_case(case, scratch, repository))
            except Deadline:
                row["error"] = f"no answer within {deadline} s"
            except Exception:  # any escape is the failure this corpus exists to catch
                row["error"] = traceback.format_exc()
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            row["seconds"] = time.perf_counter() - start
            row["peak_rss_kb"] = _peak_rss_kb()
            results.append(row)
    return results


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit-mb", type=int, default=0, help="address-space limit (RLIMIT_AS), 0 for none")
    parser.add_argument("--deadline", type=float, default=60.0, help="seconds a case may take before it counts as hung")
    parser.add_argument("--only", action="append", default=[], help="run only this case (repeatable)")
    args = parser.parse_args(argv)
    if args.limit_mb:
        limit = args.limit_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    cases = [c for c in CASES if not args.only or c.name in args.only]
    for row in run_all(cases, args.deadline):
        print(json.dumps(row, ensure_ascii=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
