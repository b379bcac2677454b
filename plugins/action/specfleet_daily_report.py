# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin for ``specfleet_daily_report`` (documentation in ``library/specfleet_daily_report.py``)."""
from __future__ import annotations

from ansible_specfleet.action import ControllerAction
from specfleet.report import daily
from specfleet.store.core import StoreError


class ActionModule(ControllerAction):

    ERRORS = (StoreError,)

    def act(self, result, args, task_vars, db):
        written = daily.write_report(db, args["project"], args["day"], args["report_dir"],
                                     dry_run=self._task.check_mode)
        result.update(changed=not self._task.check_mode, day=written["day"], markdown=written["markdown"],
                      html=written["html"], headline=written["headline"], msg=written["lines"])
        return result
