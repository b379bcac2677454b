# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Secret values on the node: the bootstrap's credentials file, and their redaction from every file."""
from __future__ import annotations

import re


class Redactor:
    """Replaces every secret value with ``***`` (values under 4 characters are too short to find safely)."""

    def __init__(self, secrets: list[str]):
        self.values = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for value in self.values:
            text = text.replace(value, "***")
        return text

    def bytes(self, data: bytes) -> bytes:
        for value in self.values:
            data = data.replace(value.encode(), b"***")
        return data


# -- the node's credentials file ------------------------------------------------------

CREDENTIAL_LINE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$")


def read_credentials(path: str) -> dict[str, str]:
    """``NAME='value'`` lines of the bootstrap's credentials file (shell quoting); {} if absent."""
    import shlex
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return {}
    found = {}
    for line in lines:
        match = CREDENTIAL_LINE.match(line.strip())
        if match:
            try:
                words = shlex.split(match.group(2))
            except ValueError:
                continue
            found[match.group(1)] = words[0] if len(words) == 1 else ""
    return found

