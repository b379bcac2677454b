# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What every step of planning shares: its settings, the plan it makes, its errors, where its prompts live."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from specfleet.ops.controller import REPO_ROOT

TEMPLATES = REPO_ROOT / "templates" / "plan"
PROMPT_VERSION = "v1"


class PlanError(Exception):
    """Planning cannot go on; the message says why. Nothing was written."""


class PlanInvalid(PlanError):
    """Every round's answer was invalid; ``problems`` are the last round's."""

    def __init__(self, rounds: int, problems: list[str]):
        super().__init__(f"the model's split was still invalid after {rounds} round(s):\n"
                         + "\n".join(f"  {p}" for p in problems))
        self.rounds, self.problems = rounds, problems


@dataclass
class Settings:
    rounds: int = 3
    max_specs: int = 15
    min_estimate_s: int = 300
    max_estimate_s: int = 900
    template: Path = TEMPLATES / f"{PROMPT_VERSION}.md.j2"


@dataclass
class Plan:
    specs: dict[str, str]                 # file name -> spec file text
    plan_text: str                        # the execution plan (markdown, Mermaid DAG)
    model: str
    rounds: int
    problems_by_round: list[list[str]] = field(default_factory=list)
    task_ids: list[str] = field(default_factory=list)

