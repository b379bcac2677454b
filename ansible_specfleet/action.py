# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The base of specfleet's action plugins that use the state store (validate, feed, report,
stop, rescue; harvest and cleanup, which also talk to a node).

Kept outside the ``specfleet`` package, which must stay free of Ansible imports. It does
what every one of them needs: check the arguments against ``ARGUMENT_SPEC``, resolve the
state database (argument ``db``, then ``specfleet_db``, then the default) and turn one of
``ERRORS`` (a :class:`~specfleet.store.core.StoreError` by default) into a failed result naming
the database. Plugins that run commands on a node set ``_requires_connection = True``.
"""
from __future__ import annotations

from typing import Any

from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

from specfleet.ops import controller
from specfleet.store.core import StoreError

DB_OPTION = {"db": {"type": "path"}}


class ControllerAction(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False
    ARGUMENT_SPEC: dict[str, dict[str, Any]] = {}
    ERRORS: tuple[type[Exception], ...] = (StoreError,)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._VALID_ARGS = frozenset(cls.ARGUMENT_SPEC)

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        _spec, args = self.validate_argument_spec(argument_spec=self.ARGUMENT_SPEC)
        db = str(controller.resolve_db(args.get("db") or task_vars.get("specfleet_db")))
        try:
            return self.act(result, args, task_vars, db)
        except self.ERRORS as exc:
            return dict(result, failed=True, msg=f"state store {db}: {exc}")

    def act(self, result: dict, args: dict, task_vars: dict, db: str) -> dict:
        raise NotImplementedError

    def _shell(self, script: str) -> dict:
        """Run ``script`` on the task's node (plugins with ``_requires_connection``)."""
        # Ansible may append " && sleep 0" to the command: no trailing newline before it.
        return self._low_level_execute_command(script.rstrip("\n"), sudoable=False)


class LandingAction(ControllerAction):
    """Base of the verify, merge and review actions: the project's settings and repository.

    They run the project's commands where ``specfleet_verify_on`` says (a node of the
    inventory; default the controller); their tasks are delegated to that host, so the
    connection is the node's.
    """

    _requires_connection = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        from specfleet.attempt.workspace import GitError
        from specfleet.land.landing import LandingError
        cls.ERRORS = (StoreError, LandingError, GitError)

    def project_config(self, args: dict, task_vars: dict):
        from specfleet.attempt.lifecycle import AttemptError, load_config
        try:
            return load_config(args["project"], args.get("specs_root") or task_vars.get("specfleet_specs_root"))
        except AttemptError as exc:
            raise StoreError(f"project {args['project']}: {exc}") from exc

    def where(self, task_vars: dict, project: str):
        """Where the project's commands run: :func:`specfleet.land.where.landing_place` decides."""
        from specfleet.land.where import OnController, OnNode, landing_place
        verify_on = task_vars.get("specfleet_verify_on")
        place = landing_place(
            str(self._templar.template(verify_on)) if verify_on else None,
            boolean(self._templar.template(task_vars.get("specfleet_unsafe_controller_verify", False)), strict=False),
            (task_vars.get("groups") or {}).get("specfleet_nodes") or [],
            str(self._templar.template(self._task.delegate_to or "")) or None)
        if place.warning:
            Display().warning(place.warning)
        if place.node is None:
            return OnController(sandboxed=place.sandboxed)
        root = task_vars["hostvars"][place.node].get("specfleet_work_root") or "~/specfleet"
        return OnNode(place.node, str(self._templar.template(root)), project, self._shell,
                      lambda local, remote: self._transfer_file(local, remote))


def chat_endpoint(templar, task_vars: dict, name: str):
    """The inventory's chat endpoint ``name`` (review, planning), or None; ValueError says what is wrong.

    Every setting is templated except ``api_key_var``: it is the *name* of the variable with
    the key, and a template there would put the key itself into error messages.
    """
    from specfleet.plan.chat import Endpoint
    raw = task_vars.get(name)
    if not raw:
        return None
    if isinstance(raw, dict):
        templated = templar.template({k: v for k, v in raw.items() if k != "api_key_var"})
        raw = dict(templated, api_key_var=raw.get("api_key_var"))

    def lookup(var: str) -> str | None:
        value = task_vars.get(var)
        return None if value is None else str(templar.template(value))

    return Endpoint.from_vars(raw, lookup, name)
