# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Repository-relative paths in ``modifies``: normalised once, checked for hostility, compared.

A ``modifies`` entry is one of three kinds:

* a file, ``backend/app.py``;
* a directory, written with a trailing slash, ``backend/schemas/`` (everything below it);
* a glob, ``tests/**/test_*.py`` (``*`` and ``?`` stay inside one path segment, ``**``
  crosses segments, ``[...]`` is a character class).

Overlap between two entries is decided conservatively: when it cannot be ruled out
cheaply (two globs with compatible literal prefixes) the entries are taken to overlap.
A false overlap only serialises two specs; a missed one lets two agents edit the same
file, which is the failure the locks exist to prevent.

Globs are matched without backtracking blow-ups: a pattern with more than two wildcard
runs (``*a*a*a*b``) is matched by :func:`_glob_match`, which walks the path once per
pattern token keeping the set of reachable positions, instead of by a regular
expression, whose backtracking took seconds to minutes on such a pattern and a long path.
Entries are also bounded: at most ``PATH_MAX`` bytes, segments at most ``NAME_MAX``
bytes, at most :data:`MAX_WILDCARDS` wildcard runs, and never a glob that matches every
path (``**``, ``*/**``): that is the whole repository, which no spec may lock.
"""
from __future__ import annotations

import re
from functools import lru_cache

GLOB_CHARS = frozenset("*?[")
# Characters a shell, git or YAML-to-shell templating would interpret. Paths reach
# node-side commands, so they are refused outright instead of being quoted everywhere.
SHELL_METACHARACTERS = frozenset("`$;&|<>\\\"'")
PATH_MAX = 4096  # bytes, Linux's limit for a whole path
NAME_MAX = 255   # bytes, for one segment (a file or directory name)
MAX_WILDCARDS = 8  # runs of '*' and '?' in one entry; real globs use one to three
_WILDCARD_RUN = re.compile(r"[*?]+")


def _is_control(char: str) -> bool:
    return ord(char) < 32 or ord(char) == 127


def normalise_modifies(raw: object) -> str:
    """Return the canonical form of one ``modifies`` entry or raise ``ValueError``.

    ``./a.py`` and ``a.py`` are the same entry; ``a//b/`` becomes ``a/b/``. Absolute
    paths, ``~``, ``..`` segments, ``.git`` and option-looking names are refused because
    each of them lets an agent's lock claim something outside its worktree.
    """
    if not isinstance(raw, str) or not raw.strip():
        raise ValueError("must be a non-empty string path relative to the repository root")
    bad = sorted({c for c in raw if _is_control(c)})
    if bad:
        names = ", ".join(repr(c) for c in bad)
        raise ValueError(f"contains control characters ({names}); write a plain path")
    meta = sorted(set(raw) & SHELL_METACHARACTERS)
    if meta:
        raise ValueError(f"contains shell metacharacters {''.join(meta)!r}; rename or drop them")
    if raw != raw.strip():
        raise ValueError("has leading or trailing whitespace")
    if raw.startswith("/"):
        raise ValueError("is absolute; write it relative to the repository root")
    if raw.startswith("~"):
        raise ValueError("starts with '~'; write it relative to the repository root")
    size = len(raw.encode("utf-8", "surrogatepass"))
    if size > PATH_MAX:
        raise ValueError(f"is {size} bytes long; a path is at most {PATH_MAX} bytes")
    runs = _WILDCARD_RUN.findall(raw)
    if any("*" * 3 in run for run in runs):
        raise ValueError("has a run of three or more '*'; write '**' (any depth) or '*' (within one directory)")
    if len(runs) > MAX_WILDCARDS:
        raise ValueError(f"has {len(runs)} wildcards; a glob has at most {MAX_WILDCARDS}")
    is_dir = raw.endswith("/")
    segments = []
    for segment in raw.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            raise ValueError("contains '..' and would escape the repository")
        if segment == ".git":
            raise ValueError("points into .git; specs change tracked files only")
        if segment.startswith("-"):
            raise ValueError(f"segment {segment!r} starts with '-' and would read as an option")
        length = len(segment.encode("utf-8", "surrogatepass"))
        if length > NAME_MAX:
            raise ValueError(f"has a segment of {length} bytes; a file or directory name is at most {NAME_MAX} bytes")
        segments.append(segment)
    if not segments:
        raise ValueError("names the whole repository; list the files or directories the spec changes")
    if is_glob(raw) and not _has_literal(segments):
        raise ValueError("is wildcards only and would claim the whole repository; "
                         "list the files or directories the spec changes")
    path = "/".join(segments)
    return path + "/" if is_dir else path


def _has_literal(segments: list[str]) -> bool:
    """Whether a glob's segments hold any character that is not a wildcard (``*``, ``?``, ``[...]``)."""
    text = re.sub(r"\[[^\]]*\]", "", "/".join(segments))
    return any(c not in "*?/" for c in text)


@lru_cache(maxsize=65536)
def is_glob(path: str) -> bool:
    return any(c in GLOB_CHARS for c in path)


def literal_prefix(path: str) -> str:
    """The part of ``path`` before its first glob character."""
    for index, char in enumerate(path):
        if char in GLOB_CHARS:
            return path[:index]
    return path


def _glob_pieces(pattern: str) -> list[str]:
    """``pattern`` as regular-expression pieces: one per literal character, class, ``?`` or star run."""
    out = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if pattern.startswith("**/", index):
            out.append("(?:.*/)?")
            index += 3
            continue
        if pattern.startswith("**", index):
            out.append(".*")
            index += 2
            continue
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            end = pattern.find("]", index + 1)
            if end == -1:
                out.append(re.escape(char))
            else:
                body = pattern[index + 1:end]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                index = end
        else:
            out.append(re.escape(char))
        index += 1
    if pattern.endswith("/"):
        out.append(".*")
    return out


_STARS = ("(?:.*/)?", ".*", "[^/]*")


@lru_cache(maxsize=4096)
def _glob_tokens(pattern: str) -> tuple[tuple[str, re.Pattern[str] | None, int], ...]:
    """Star runs as they are, every stretch between them as one fixed-length compiled chunk."""
    tokens: list[tuple[str, re.Pattern[str] | None, int]] = []
    chunk: list[str] = []
    for piece in _glob_pieces(pattern):
        if piece in _STARS:
            if chunk:
                tokens.append(("chunk", re.compile("".join(chunk)), len(chunk)))
                chunk = []
            tokens.append((piece, None, 0))
        else:
            chunk.append(piece)
    if chunk:
        tokens.append(("chunk", re.compile("".join(chunk)), len(chunk)))
    return tuple(tokens)


def _glob_match(pattern: str, path: str) -> bool:
    """Whether ``pattern`` matches all of ``path``, in O(tokens x len(path)) without backtracking.

    ``reach[p]`` says the tokens so far can match ``path[:p]``. A chunk moves each
    reachable position forward by its length where it matches; ``[^/]*`` extends each
    one up to the next ``/``; ``.*`` extends the first one to the end; ``(?:.*/)?``
    keeps them and adds every position just after a later ``/``.
    """
    size = len(path)
    reach = bytearray(size + 1)
    reach[0] = 1
    for kind, chunk, length in _glob_tokens(pattern):
        first = reach.find(1)
        if first == -1:
            return False
        after = bytearray(size + 1)
        if kind == "chunk":
            for start in range(first, size - length + 1):
                if reach[start] and chunk.match(path, start):
                    after[start + length] = 1
        elif kind == ".*":
            after[first:] = b"\x01" * (size + 1 - first)
        elif kind == "[^/]*":
            open_run = False
            for position in range(first, size + 1):
                open_run = open_run or bool(reach[position])
                if open_run:
                    after[position] = 1
                if position < size and path[position] == "/":
                    open_run = False
        else:  # (?:.*/)?
            after[:] = reach
            for position in range(first, size):
                if path[position] == "/":
                    after[position + 1] = 1
        reach = after
    return bool(reach[size])


@lru_cache(maxsize=4096)
def glob_regex(pattern: str) -> re.Pattern[str]:
    """Compile a ``modifies`` glob; a trailing ``/`` matches everything below the directory."""
    out = _glob_pieces(pattern)
    return re.compile("".join(out) + r"\Z")


def covers(pattern: str, path: str) -> bool:
    """Whether the ``modifies`` entry ``pattern`` claims the concrete file ``path``."""
    if pattern.endswith("/") and not is_glob(pattern):
        return path.startswith(pattern)
    if is_glob(pattern):
        if sum(1 for kind, _chunk, _length in _glob_tokens(pattern) if kind != "chunk") > 2:
            return _glob_match(pattern, path)  # a regex could backtrack for minutes
        return bool(glob_regex(pattern).match(path))
    return pattern == path


def paths_overlap(first: str, second: str) -> bool:
    """Whether two normalised ``modifies`` entries may claim a common file (see module doc)."""
    if first == second:
        return True
    first_concrete = not first.endswith("/") and not is_glob(first)
    second_concrete = not second.endswith("/") and not is_glob(second)
    if first_concrete:
        return covers(second, first)
    if second_concrete:
        return covers(first, second)
    # Two directories and/or globs: compare what they are rooted at.
    a, b = literal_prefix(first), literal_prefix(second)
    return a.startswith(b) or b.startswith(a)


def sets_overlap(first: list[str] | tuple[str, ...], second: list[str] | tuple[str, ...]) -> list[tuple[str, str]]:
    """Every overlapping pair between two ``modifies`` lists, for messages."""
    return [(a, b) for a in first for b in second if paths_overlap(a, b)]


class LockIndex:
    """``modifies`` entries with their owners, for "which entry overlaps this path first?" at scale.

    A scheduling pass asks this for every ready spec against every lock held or reserved:
    at 1,000 specs and 140 running that was millions of :func:`paths_overlap` calls a pass.
    Concrete file paths (the usual entry) are found by a dictionary lookup; only
    directories and globs are scanned. The answer is the overlapping entry added first,
    exactly as a scan of the entries in order would find.
    """

    def __init__(self) -> None:
        self._entries: list[tuple[str, object]] = []   # in the order added
        self._exact: dict[str, list[int]] = {}         # concrete path -> entry numbers
        self._wide: list[int] = []                     # entry numbers of directories and globs
        self._dead: set[int] = set()

    def add(self, path: str, owner: object) -> None:
        number = len(self._entries)
        self._entries.append((path, owner))
        if path.endswith("/") or is_glob(path):
            self._wide.append(number)
        else:
            self._exact.setdefault(path, []).append(number)

    def drop(self, owner: object) -> None:
        """Forget every entry of ``owner``."""
        self._dead.update(n for n, (_path, who) in enumerate(self._entries) if who == owner)

    def first(self, path: str, skip: object = None) -> tuple[str, object] | None:
        """The first live entry, not owned by ``skip``, that overlaps ``path``; None if there is none."""
        if path.endswith("/") or is_glob(path):
            candidates = range(len(self._entries))  # a directory or glob may overlap anything
        else:
            exact = self._exact.get(path, [])
            candidates = sorted(exact + self._wide) if exact and self._wide else exact or self._wide
        for number in candidates:
            entry, owner = self._entries[number]
            if number not in self._dead and owner != skip and paths_overlap(path, entry):
                return entry, owner
        return None
