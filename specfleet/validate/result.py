# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a validation found: every problem, the specs that parsed, the files that are not specs."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from specfleet.model.problems import Problem
from specfleet.model.project import ProjectConfig
from specfleet.model.spec import Spec


@dataclass
class ValidationReport:
    project: str
    project_file: str = ""
    config: ProjectConfig | None = None
    specs: dict[str, Spec] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    files: dict[str, str | None] = field(default_factory=dict)  # display path -> task id
    ignored: dict[str, str] = field(default_factory=dict)       # display path -> why
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def invalid_paths(self) -> set[str]:
        return {p.path for p in self.problems}

    @property
    def valid_ids(self) -> list[str]:
        bad = self.invalid_paths
        return sorted(s.task_id for s in self.specs.values() if s.path not in bad)

    def summary(self) -> str:
        lines = []
        if self.ok:
            lines.append(f"project {self.project}: {len(self.specs)} specs valid")
        else:
            lines.append(f"project {self.project}: {len(self.problems)} problem(s) in "
                         f"{len(self.invalid_paths)} file(s); nothing was queued")
            lines += [f"  - {p}" for p in sorted(self.problems, key=Problem.sort_key)]
            if self.valid_ids:
                lines.append("valid: " + ", ".join(self.valid_ids))
        lines += [f"not a spec: {path} ({why})" for path, why in sorted(self.ignored.items())]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {
            "project": self.project, "ok": self.ok,
            "problems": [p.as_dict() for p in sorted(self.problems, key=Problem.sort_key)],
            "valid": self.valid_ids,
            "invalid": sorted(self.invalid_paths),
            "specs": {t: s.as_dict() for t, s in sorted(self.specs.items())},
            "ignored": dict(sorted(self.ignored.items())),
            "notes": list(self.notes),
        }
