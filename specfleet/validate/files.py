# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which files of a project folder are spec candidates, and reading one defensively.

Spec files are read defensively (:func:`read_spec_file`): only regular files, checked
with ``stat`` before opening (a FIFO would block the read forever, ``/dev/zero`` never
ends) and with ``fstat`` after; the size is checked before reading and at most
``MAX_SPEC_BYTES + 1`` bytes are read; a symbolic link is followed only when it stays
inside the specs folder.
"""
from __future__ import annotations

import fnmatch
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

from specfleet.model import frontmatter
from specfleet.model.problems import Problem
from specfleet.model.project import ProjectConfig
from specfleet.model.spec import show
from specfleet.validate.result import ValidationReport

# Markdown files that live beside specs and are never specs.
NON_SPEC_NAMES = frozenset({"README.md", "SHARED_CONTEXT.md", "CLAUDE.md", "AGENTS.md", "CHANGELOG.md"})
# A file without front matter whose name looks like this was meant to be a spec.
LOOKS_LIKE_SPEC = re.compile(r"^[A-Za-z]{1,4}-?\d+")
MAX_SPEC_BYTES = 256 * 1024


def _display_name(name: str) -> str:
    return name if name.isprintable() else repr(name)[1:-1]


def candidates(folder: Path, display_root: str, config: ProjectConfig, report: ValidationReport) -> Iterator[tuple[Path, str]]:
    """The ``.md`` files of ``folder`` that may be specs, with their display paths; the others go to ``report.ignored``."""
    context = {os.path.basename(c) for c in config.context_files}
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        name = entry.name
        display = f"{display_root}/{_display_name(name)}"
        if not name.endswith(".md"):
            continue
        if os.path.isdir(entry) and not os.path.islink(entry):
            report.ignored[display] = "a directory"
            continue
        if name.startswith(("_", ".")):
            report.ignored[display] = "name starts with '_' or '.'"
            continue
        if name in NON_SPEC_NAMES or name in context:
            report.ignored[display] = "context file"
            continue
        if any(fnmatch.fnmatch(name, pattern) for pattern in config.ignore):
            report.ignored[display] = "matches project.yml 'ignore'"
            continue
        yield entry, display


_FILE_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
               (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
               (stat.S_ISSOCK, "a socket"))


def _kind(mode: int) -> str:
    return next((name for test, name in _FILE_KINDS if test(mode)), "not a regular file")


def read_spec_file(entry: Path, specs_root: str) -> tuple[bytes | None, str, str]:
    """The bytes of a spec file, or ``None`` with what is wrong and what would be right.

    ``specs_root`` is the real path a symbolic link must stay inside.
    """
    not_regular = "a spec is a regular markdown file"
    try:
        if os.path.islink(entry):
            real = os.path.realpath(entry)
            if os.path.commonpath([real, specs_root]) != specs_root:
                return None, f"is a symbolic link to {show(real, 120)}, outside the specs folder", \
                    "copy the spec into the project folder instead of linking to it"
        info = os.stat(entry)  # follows a link; never opens, so a FIFO cannot block here
        if not stat.S_ISREG(info.st_mode):
            return None, f"is {_kind(info.st_mode)}, not a regular file", not_regular
        if info.st_size > MAX_SPEC_BYTES:
            return None, f"is {info.st_size} bytes; a spec is at most {MAX_SPEC_BYTES}", "split it into smaller specs"
        # O_NONBLOCK: if the file was swapped for a FIFO since the stat, open must not wait for a writer.
        fd = os.open(entry, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        return None, f"cannot be read: {exc.strerror}", ""
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None, f"is {_kind(info.st_mode)}, not a regular file", not_regular
        chunks, size = [], 0
        while size <= MAX_SPEC_BYTES:
            # Ask for what stat promised plus a page (a file may grow), never a 256 KB buffer per small file.
            chunk = os.read(fd, min(MAX_SPEC_BYTES + 1 - size, max(info.st_size - size, 0) + 4096))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        return None, f"cannot be read: {exc.strerror}", ""
    finally:
        os.close(fd)
    if size > MAX_SPEC_BYTES:
        return None, f"is more than {MAX_SPEC_BYTES} bytes; a spec is at most {MAX_SPEC_BYTES}", \
            "split it into smaller specs"
    return b"".join(chunks), "", ""


def spec_text(entry: Path, path: str, specs_root: str, report: ValidationReport) -> str | None:
    """The text of a candidate that is a spec; ``None`` when it is not one (noted in ``report``) or cannot be read.

    A file without front matter is a problem only when its name looks like a spec's
    (``S01``, ``api-12``...); otherwise it is some other Markdown file, ignored.
    """
    raw, wrong, hint = read_spec_file(entry, specs_root)
    if raw is None:
        report.problems.append(Problem(path, None, None, wrong, hint))
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        report.problems.append(Problem(path, raw.count(b"\n", 0, exc.start) + 1, None,
                                       f"is not UTF-8 text (byte {exc.start})", "save it as UTF-8"))
        return None
    if not frontmatter.has_front_matter(text):
        if LOOKS_LIKE_SPEC.match(entry.name[:-3]):
            state = "is empty" if not text.strip() else "has no YAML front matter"
            report.problems.append(Problem(path, 1, None, f"looks like a spec but {state}",
                                           "start the file with a '---' line, or rename it to _" + entry.name))
        else:
            report.ignored[path] = "no front matter"
        return None
    return text
