# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# The work is done by the action plugin plugins/action/specfleet_validate.py on the
# controller; this file carries the documentation (as ansible.builtin.add_host does).
from __future__ import annotations

DOCUMENTATION = r"""
---
module: specfleet_validate
short_description: Validate every spec of a specfleet project and report all problems at once
description:
  - Reads C(specs/<project>/project.yml) and every spec file beside it, checks YAML, the JSON Schema,
    durations, C(modifies) paths (normalised, not absolute, not escaping the repository, no shell
    metacharacters, existing on the base branch), required sections, duplicate ids, unknown
    dependencies, dependency cycles (printed as a path) and executors against the inventory.
  - Fails when anything is wrong, naming the file, line, field and what would be right; valid
    specs are still listed as valid.
  - Writes nothing.
options:
  project:
    description: Name of the project, the folder under the specs root.
    type: str
    required: true
  specs_root:
    description:
      - Folder holding one sub-folder per project.
      - Defaults to the variable C(specfleet_specs_root), then C($SPECFLEET_SPECS), then C(specs/) of the repository.
    type: path
  executors:
    description:
      - Executor definitions (mapping) or names (list) a spec may use.
      - Defaults to the inventory variable C(specfleet_executors).
    type: raw
  default_executor:
    description: Executor for specs and projects naming none; defaults to C(specfleet_default_executor).
    type: str
  check_repository:
    description: Check C(modifies) against the files on the project's base branch.
    type: bool
    default: true
attributes:
  action:
    support: full
  async:
    support: none
  check_mode:
    support: full
  diff_mode:
    support: none
  platform:
    platforms: posix
notes:
  - Runs on the controller; target C(localhost).
author:
  - specfleet contributors
"""

EXAMPLES = r"""
- name: Validate the example project
  specfleet_validate:
    project: clawmarketing

- name: Validate without looking at the repository (e.g. before it is cloned)
  specfleet_validate:
    project: clawmarketing
    check_repository: false
"""

RETURN = r"""
ok:
  description: Whether the project has no problem at all.
  returned: always
  type: bool
problems:
  description: Every problem found, each with C(path), C(line), C(field), C(message), C(hint) and C(text).
  returned: always
  type: list
  elements: dict
valid:
  description: Task ids of specs that have no problem of their own.
  returned: always
  type: list
  elements: str
invalid:
  description: Files that have at least one problem.
  returned: always
  type: list
  elements: str
specs:
  description: The parsed specs by task id, with defaults applied (durations in seconds, normalised paths).
  returned: always
  type: dict
ignored:
  description: Markdown files in the project folder that are not specs, and why.
  returned: always
  type: dict
notes:
  description: Checks that were skipped and why (e.g. a remote repository).
  returned: always
  type: list
  elements: str
summary:
  description: The report as text.
  returned: always
  type: str
"""

if __name__ == "__main__":
    raise SystemExit("specfleet_validate runs as an action plugin on the controller; run it from a playbook")
