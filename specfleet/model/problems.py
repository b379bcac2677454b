# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""User-facing problems: every error names the file, the field, what is wrong and what is right."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one file.

    ``path`` is as the user would type it (relative to the specs root when possible),
    ``field`` is a front matter key, a section name or ``None`` for the whole file,
    ``line`` is 1-based in the file when known.
    """

    path: str
    line: int | None
    field: str | None
    message: str
    hint: str = ""

    def sort_key(self) -> tuple:
        return (self.path, self.line or 0, self.field or "", self.message)

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        what = f"field '{self.field}': " if self.field else ""
        hint = f" ({self.hint})" if self.hint else ""
        return f"{where}: {what}{self.message}{hint}"

    def as_dict(self) -> dict:
        return {"path": self.path, "line": self.line, "field": self.field,
                "message": self.message, "hint": self.hint, "text": str(self)}


class SpecfleetError(Exception):
    """An error the user can fix; ``problems`` lists every cause found in one pass."""

    def __init__(self, message: str, problems: list[Problem] | None = None):
        super().__init__(message)
        self.problems = list(problems or [])

    def __str__(self) -> str:
        head = super().__str__()
        if not self.problems:
            return head
        return head + "\n" + "\n".join(f"  - {p}" for p in self.problems)
