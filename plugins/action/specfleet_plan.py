# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin for ``specfleet_plan`` (documentation in ``library/specfleet_plan.py``)."""
from __future__ import annotations

from pathlib import Path

from ansible_specfleet.action import SpecfleetAction, chat_endpoint
from specfleet.model.project import PROJECT_NAME
from specfleet.ops.controller import resolve_specs_root
from specfleet.plan import chat, planning


class ActionModule(SpecfleetAction):
    def perform(self, result, args, task_vars):
        # Plain strings: Ansible's tagged ones cannot be written by yaml.safe_dump into front matter.
        args = {k: (str(v) if isinstance(v, str) else [str(x) for x in v] if isinstance(v, list) else v)
                for k, v in args.items()}
        project = args["project"]
        if not PROJECT_NAME.match(project):
            return dict(result, failed=True, msg=f"project {project!r} is not a valid project name")
        root = resolve_specs_root(args["specs_root"] or task_vars.get("specfleet_specs_root"))
        if not (root / project / "project.yml").is_file():
            return dict(result, failed=True, msg=f"specs/{project}/project.yml does not exist: create the project first")
        executors = task_vars.get("specfleet_executors")
        names = sorted(map(str, executors)) if isinstance(executors, dict) else None
        default = task_vars.get("specfleet_default_executor")
        try:
            if args["approve"]:
                return self._approve(result, root, project, args["approve"], names, default)
            return self._plan(result, root, project, args, task_vars, names, default)
        except (planning.PlanError, chat.ChatUnavailable, ValueError) as exc:
            return dict(result, failed=True, msg=f"{project}: {exc}; nothing was written")

    def _approve(self, result, root, project, approve, names, default):
        if self._task.check_mode:
            would = planning.approve(root, project, approve, names, default, dry_run=True)
            return dict(result, changed=bool(would), approved=would,
                        msg=f"check mode: {', '.join(would)} would move into specs/{project}/")
        moved = planning.approve(root, project, approve, names, default)
        return dict(result, changed=True, approved=moved,
                    msg=f"{project}: {len(moved)} specs moved into specs/{project}/ ({', '.join(moved)}); "
                        f"dispatch them with dispatch.yml -e project={project}")

    def _plan(self, result, root, project, args, task_vars, names, default):
        direction = planning.read_direction(args["direction"], args["direction_file"])
        endpoint = chat_endpoint(self._templar, task_vars, "specfleet_plan_endpoint")
        if endpoint is None:
            raise planning.PlanError("specfleet_plan_endpoint is not set in the inventory (base_url, model, "
                                     "api_key_var naming the vault variable with the key)")
        settings = planning.Settings(rounds=max(1, args["rounds"]), max_specs=max(1, args["max_specs"]))
        if args["template"]:
            settings.template = Path(args["template"]).expanduser().resolve()
        lines: list[str] = []
        plan = planning.make_plan(endpoint, root, project, direction, settings, names, default, log=lines.append)
        if self._task.check_mode:
            return dict(result, changed=False, specs=plan.task_ids, rounds=plan.rounds, log=lines,
                        msg=f"check mode: {len(plan.task_ids)} valid specs after {plan.rounds} round(s), not written")
        written = planning.land(root, project, plan, args["into"])
        return dict(result, changed=True, specs=plan.task_ids, rounds=plan.rounds, log=lines,
                    files=[str(p) for p in written], model=plan.model,
                    msg=f"{project}: {len(plan.task_ids)} valid specs after {plan.rounds} round(s) in "
                        f"{written[0].parent}" + (f"; approve with playbooks/plan.yml -e project={project} "
                                                  "-e approve=all" if args["into"] == "pending" else ""))
