# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller-side entry points shared by the action plugins, the CLI and the tests.

They turn loosely typed inputs (Ansible variables, command-line flags) into the core's
calls, so every front end validates and feeds a project the same way.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .settings import default_db_path
from .store import FeedResult, Store
from .validation import ValidationReport, validate_project

# plugins/module_utils/specfleet/controller.py -> the repository (or AWX project) root.
REPO_ROOT = Path(__file__).resolve().parents[3]


def resolve_specs_root(value: str | None = None) -> Path:
    """``value``, else ``$SPECFLEET_SPECS``, else ``<repo>/specs``; relative to the repo root."""
    raw = value or os.environ.get("SPECFLEET_SPECS") or "specs"
    path = Path(os.path.expanduser(raw))
    return path if path.is_absolute() else REPO_ROOT / path


def resolve_db(value: str | None = None) -> Path:
    return Path(os.path.expanduser(value)) if value else default_db_path()


def executor_names(value: Mapping[str, Any] | Iterable[str] | None) -> list[str] | None:
    """Names from the inventory's ``specfleet_executors`` (a mapping name -> definition)."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        return sorted(str(k) for k in value)
    if isinstance(value, str):
        raise TypeError("executors must be a mapping or a list of names, not a string")
    return sorted(str(v) for v in value)


def project_inputs(args: Mapping[str, Any], task_vars: Mapping[str, Any]) -> dict[str, Any]:
    """A task's arguments, falling back to the inventory variables ``specfleet_*``."""
    executors = args.get("executors")
    return {
        "project": args["project"],
        "specs_root": args.get("specs_root") or task_vars.get("specfleet_specs_root"),
        "executors": executors if executors is not None else task_vars.get("specfleet_executors"),
        "default_executor": args.get("default_executor") or task_vars.get("specfleet_default_executor"),
    }


def validate(project: str, specs_root: str | None = None, executors: Any = None,
             default_executor: str | None = None, check_repository: bool = True) -> ValidationReport:
    root = resolve_specs_root(specs_root)
    try:
        display = str(root.relative_to(REPO_ROOT))
    except ValueError:
        display = str(root)
    return validate_project(root, project, executor_names(executors), default_executor,
                            check_repository=check_repository, display_root=display)


def feed(project: str, db: str | None = None, specs_root: str | None = None, executors: Any = None,
         default_executor: str | None = None, dry_run: bool = False) -> tuple[ValidationReport, FeedResult | None]:
    """Validate, then upsert into the store; ``None`` as the result when the project is invalid."""
    report = validate(project, specs_root, executors, default_executor)
    if not report.ok:
        return report, None
    with Store(resolve_db(db)) as store:
        result = store.feed_preview(report) if dry_run else store.feed(report)
    return report, result
