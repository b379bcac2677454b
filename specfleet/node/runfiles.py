# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The run directory's plain files: atomic writes, tails of output, and what ships to a node.

:data:`FILES` (read from ``shipped.txt`` beside this file) names every file an attempt copies
into its run directory; :func:`runner_version` fingerprints them, so the controller and a node
agree on a version exactly when their copies are equal.
"""
from __future__ import annotations

import os
import time

TAIL_LINES = 40
TAIL_BYTES = 8192
SHIPPED_LIST = "shipped.txt"


def shipped_files(folder: str | None = None) -> tuple[str, ...]:
    """The names in ``shipped.txt`` of ``folder`` (default: this file's folder); ``#`` starts a comment."""
    folder = folder or os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(folder, SHIPPED_LIST), encoding="utf-8") as handle:
        lines = (line.split("#", 1)[0].strip() for line in handle)
        return tuple(line for line in lines if line)


# The files an attempt ships to the node (the runner imports only these and the stdlib).
FILES = shipped_files()


class RunnerError(Exception):
    """A failure with a message for the status file, ``phase`` says where."""


class InfrastructureError(RunnerError):
    """The node, not the spec, failed (e.g. its mirror lacks the start commit): no attempt is charged."""


def now() -> float:
    return time.time()


def write_atomic(path: str, text: str, mode: int = 0o600) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


def tail(text: str, lines: int = TAIL_LINES, limit: int = TAIL_BYTES) -> str:
    return "\n".join(text[-limit:].splitlines()[-lines:])

def runner_version(folder: str | None = None) -> str:
    """A fingerprint of the runner's files (:data:`FILES`): equal files, equal version."""
    import hashlib
    folder = folder or os.path.dirname(os.path.abspath(__file__))
    digest = hashlib.sha256()
    for name in FILES:
        with open(os.path.join(folder, name), "rb") as handle:
            digest.update(handle.read())
    return digest.hexdigest()[:12]

