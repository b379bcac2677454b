# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Writing a plan's files (all or nothing, never over an existing file) and approving pending specs into the project."""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from specfleet.plan.base import Plan, PlanError, Settings
from specfleet.plan.check import check


def land(specs_root: Path, project: str, plan: Plan, into: str = "pending") -> list[Path]:
    """Write the specs and the plan; all or nothing, never over an existing file."""
    folder = specs_root / project / ("pending" if into == "pending" else "")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    files = dict(plan.specs)
    # '_' keeps the plan out of validation, in the project folder as in pending/.
    files[f"_plan-{stamp}.md"] = plan.plan_text
    taken = [name for name in files if (folder / name).exists()
             or (into == "pending" and (specs_root / project / name).exists())]
    if taken:
        raise PlanError(f"specs/{project}/{'pending/' if into == 'pending' else ''}: {', '.join(sorted(taken))} "
                        "exist already; nothing was written")
    moved: list[Path] = []
    staging = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".plan-", dir=folder))
        for name, text in files.items():
            (staging / name).write_text(text, encoding="utf-8")
        for name in files:
            target = folder / name
            os.link(staging / name, target)  # fails, rather than replaces, if a file appeared meanwhile
            moved.append(target)
    except OSError as exc:
        for path in moved:
            path.unlink(missing_ok=True)
        raise PlanError(f"specs/{project}: could not write the plan ({exc}); nothing was written") from None
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    return moved


def approve(specs_root: Path, project: str, which: Sequence[str] | str, executors: Iterable[str] | None = None,
            default_executor: str | None = None, dry_run: bool = False) -> list[str]:
    """Move approved pending specs into the project once the project with them is valid; -> task ids."""
    pending = specs_root / project / "pending"
    available = {p.name[:-3]: p for p in sorted(pending.glob("*.md")) if not p.name.startswith(("_", "."))}
    if not available:
        raise PlanError(f"specs/{project}/pending/ holds no spec to approve (plan.yml writes them there)")
    wanted = sorted(available) if which in ("all", ["all"]) else [str(w).strip() for w in which if str(w).strip()]
    unknown = [w for w in wanted if w not in available]
    if unknown or not wanted:
        raise PlanError(f"not pending in specs/{project}/pending/: {', '.join(unknown) or '(none named)'}; pending: "
                        + ", ".join(sorted(available)))
    rendered = {available[w].name: available[w].read_text(encoding="utf-8") for w in wanted}
    problems = check(specs_root, project, rendered, executors, default_executor,
                     Settings(min_estimate_s=0, max_estimate_s=10 ** 9), approving=True)
    problems = [p for p in problems if "field 'estimate' is missing" not in p]
    if problems:
        raise PlanError("the project with these specs is not valid; nothing was moved:\n"
                        + "\n".join(f"  {p}" for p in problems))
    if dry_run:
        return wanted
    moved: list[Path] = []
    try:
        for name in rendered:  # link all first: a name taken meanwhile stops the whole batch
            os.link(pending / name, specs_root / project / name)
            moved.append(specs_root / project / name)
    except OSError as exc:
        for path in moved:
            path.unlink(missing_ok=True)
        raise PlanError(f"specs/{project}: could not move the specs ({exc}); nothing was moved") from None
    for name in rendered:
        (pending / name).unlink()
    return wanted
