# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin for ``specfleet_validate`` (documentation in ``library/specfleet_validate.py``).

It runs on the controller, where the specs and the state database are; the policy is in
the Ansible-free core (``plugins/module_utils/specfleet``).
"""
from __future__ import annotations

from ansible_specfleet.action import ControllerAction
from specfleet.ops import controller


class ActionModule(ControllerAction):

    def act(self, result, args, task_vars, db):
        # Ansible's `groups` (group -> hosts), as plain data: no spec id may be a host or group name.
        report = controller.validate(**controller.project_inputs(args, task_vars),
                                     check_repository=args["check_repository"],
                                     inventory_groups=task_vars.get("groups"))
        result.update(report.as_dict(), changed=False, summary=report.summary())
        if not report.ok:
            result.update(failed=True, msg=report.summary())
        return result
