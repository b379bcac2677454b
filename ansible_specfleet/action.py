# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The base of specfleet's action plugins: options from the module's documentation, then the core.

Kept outside the ``specfleet`` package, which must stay free of Ansible imports.

One source for a module's interface: ``library/<module>.py``'s ``DOCUMENTATION`` (the
file ``ansible-doc`` reads; nothing ships it to a node). :class:`SpecfleetAction` reads its
``options`` into an argument spec (``suboptions`` become ``options``; only the keys the
argument-spec validator knows are kept) and its cross-field rules from the top-level key
``argument_spec_rules``: a mapping whose keys are named and shaped as ``AnsibleModule``'s
keyword arguments (``mutually_exclusive``, ``required_together``, ``required_one_of``,
``required_if``, ``required_by``). One mapping rather than top-level lists, because
``ansible-doc`` renders an unknown mapping but fails on a top-level list of lists. It validates the task's arguments with them
(``ActionBase.validate_argument_spec``), so a bad combination fails before anything runs,
with Ansible's own message, and no action plugin writes an option twice.

:class:`ControllerAction` adds what the plugins that use the state store need: the state
database (argument ``db``, then ``specfleet_db``, then the default) and one of ``ERRORS``
(a :class:`~specfleet.store.core.StoreError` by default) turned into a failed result
naming the database. Plugins that run commands on a node set ``_requires_connection = True``.
"""
from __future__ import annotations

import ast
import functools
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

from specfleet.ops import controller
from specfleet.store.core import StoreError

RULES = ("mutually_exclusive", "required_together", "required_one_of", "required_if", "required_by")
# The keys of a documented option that the argument-spec validator reads; the rest is prose.
SPEC_KEYS = ("type", "required", "default", "choices", "elements", "aliases", "no_log", "apply_defaults")


def argument_spec(options: dict | None) -> dict[str, dict[str, Any]]:
    """A module's documented ``options`` as an argument spec (recursively for ``suboptions``)."""
    spec = {}
    for name, option in (options or {}).items():
        entry = {key: option[key] for key in SPEC_KEYS if key in option}
        if option.get("suboptions"):
            entry["options"] = argument_spec(option["suboptions"])
        spec[name] = entry
    return spec


@dataclass(frozen=True)
class ModuleInterface:
    """What a module accepts: its argument spec and its cross-field rules (see the module docstring)."""

    argument_spec: dict
    rules: dict

    @classmethod
    def from_doc(cls, doc: dict) -> ModuleInterface:
        rules = doc.get("argument_spec_rules") or {}
        unknown = sorted(set(rules) - set(RULES))
        if unknown:
            raise ValueError(f"argument_spec_rules: unknown rule(s) {', '.join(unknown)}; known: {', '.join(RULES)}")
        return cls(argument_spec(doc.get("options")), {rule: rules[rule] for rule in RULES if rules.get(rule)})

    @classmethod
    def of_file(cls, path: str | Path) -> ModuleInterface:
        return cls.from_doc(documentation(path))


def documentation(path: str | Path) -> dict:
    """The parsed ``DOCUMENTATION`` of a module file, read without running it."""
    for node in ast.parse(Path(path).read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "DOCUMENTATION" for t in node.targets):
            return yaml.safe_load(ast.literal_eval(node.value))
    raise ValueError(f"{path} has no DOCUMENTATION")


@functools.cache
def module_interface(plugin_file: str) -> ModuleInterface:
    """The interface of the module an action plugin file implements (same name, in ``library/``).

    Found as Ansible finds the module (the configured ``library`` path); failing that, in
    the repository's ``library/`` beside ``plugins/``.
    """
    from ansible.plugins.loader import module_loader
    name = Path(plugin_file).stem
    path = module_loader.find_plugin(name)
    if not path or not str(path).endswith(".py"):
        path = Path(plugin_file).resolve().parents[2] / "library" / f"{name}.py"
    return ModuleInterface.of_file(path)


class SpecfleetAction(ActionBase):
    """Validates the task's arguments against the module's documentation, then :meth:`perform`."""

    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        interface = module_interface(sys.modules[type(self).__module__].__file__)
        # ActionBase.run refuses unknown options by this set; it is the documented options.
        self._VALID_ARGS = frozenset(interface.argument_spec)
        result = super().run(tmp, task_vars)
        _spec, args = self.validate_argument_spec(argument_spec=interface.argument_spec, **interface.rules)
        return self.perform(result, args, task_vars or {})

    def perform(self, result: dict, args: dict, task_vars: dict) -> dict:
        raise NotImplementedError

    def _shell(self, script: str) -> dict:
        """Run ``script`` on the task's node (plugins with ``_requires_connection``)."""
        # Ansible may append " && sleep 0" to the command: no trailing newline before it.
        return self._low_level_execute_command(script.rstrip("\n"), sudoable=False)


class ControllerAction(SpecfleetAction):
    ERRORS: tuple[type[Exception], ...] = (StoreError,)

    def perform(self, result: dict, args: dict, task_vars: dict) -> dict:
        db = str(controller.resolve_db(args.get("db") or task_vars.get("specfleet_db")))
        try:
            return self.act(result, args, task_vars, db)
        except self.ERRORS as exc:
            return dict(result, failed=True, msg=f"state store {db}: {exc}")

    def act(self, result: dict, args: dict, task_vars: dict, db: str) -> dict:
        raise NotImplementedError


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
        from specfleet.land.repository import LandingError
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
