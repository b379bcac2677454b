# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What both halves of an attempt read first: the project's configuration, and the attempt's error."""
from __future__ import annotations

from specfleet.model.project import ProjectConfig, load_project
from specfleet.ops.controller import resolve_specs_root


class AttemptError(Exception):
    pass


def load_config(project: str, specs_root: str | None) -> ProjectConfig:
    root = resolve_specs_root(specs_root)
    config, problems = load_project(root / project, project, f"specs/{project}/project.yml")
    if config is None:
        raise AttemptError("; ".join(map(str, problems)))
    return config
