# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin for ``specfleet_node_state`` (documentation in ``library/specfleet_node_state.py``)."""
from __future__ import annotations

from ansible_specfleet.action import ControllerAction
from specfleet.store.core import Store


class ActionModule(ControllerAction):

    def act(self, result, args, task_vars, db):
        # Given with state=disabled (required_if in the docs), but it must say something.
        if args["state"] == "disabled" and not (args["reason"] or "").strip():
            return dict(result, failed=True, msg="state=disabled needs a reason (it is shown to whoever looks)")
        with Store(db) as store:
            before = next(iter(store.node_status(args["node"])), None)
            out = bool(before and before["disabled_by"])
            if self._task.check_mode:
                changed = (args["state"] == "disabled") != out or (
                    out and args["state"] == "disabled" and before["disabled_reason"] != args["reason"])
                return dict(result, changed=changed, node=args["node"], state=args["state"])
            if args["state"] == "disabled":
                changed = store.set_node_out(args["node"], args["by"], args["reason"].strip(), args["facts"])
            else:
                changed = store.set_node_in(args["node"], args["by"], args["facts"])
            after = store.node_status(args["node"])[0]
        return dict(result, changed=changed, node=args["node"],
                    state="disabled" if after["disabled_by"] else "enabled",
                    disabled_by=after["disabled_by"], reason=after["disabled_reason"])
