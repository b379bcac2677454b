# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fleet as the inventory describes it, checked before anything touches a node.

Ansible accepts any variable on any host, so a typo (``specfleet_slots: -8``, a label that
names no executor, two hosts at one address) would otherwise surface as a strange
scheduling result hours later. :func:`check` reads what every play of specfleet relies on
and names the inventory file, the host and the variable of each problem.

Per node (group ``specfleet_nodes``)::

    specfleet_slots: 16                     # agents at once; 0 keeps the node out of dispatch
    specfleet_node_priority: 0              # lower is preferred
    specfleet_executor_labels: [glm, minimax]  # executors it runs (none listed: any)
    specfleet_arch: x86_64                  # x86_64 | aarch64 (checked against the node by bootstrap)
    specfleet_enabled: true
    specfleet_work_root: /srv/specfleet

Fleet-wide: ``specfleet_executors`` (see :mod:`executors`) and ``specfleet_agent_clis``, the
CLIs bootstrap installs (``{name, npm | pip, version, version_args}``).
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from specfleet.attempt.executors import ExecutorError, chain, check_definition

ARCHES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}
HOST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}\Z")
CLI_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
# npm: optional @scope/, then a name; pip: a distribution name with optional extras.
NPM_PACKAGE = re.compile(r"^(@[a-z0-9][a-z0-9._~-]*/)?[a-z0-9][a-z0-9._~-]*\Z")
PIP_PACKAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9._,-]+\])?\Z")
# "latest" or one exact version: a range or a dist-tag would reinstall and drift on every run.
VERSION = re.compile(r"^(latest|[0-9]+(\.[0-9]+)*([-+][0-9A-Za-z.-]+)?)\Z")
CLI_KEYS = {"name", "npm", "pip", "version", "version_args"}
TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class Problem:
    source: str      # the inventory file (or "inventory" when Ansible does not say)
    host: str | None
    field: str
    text: str

    def __str__(self) -> str:
        where = f"{self.source}: {self.host}: " if self.host else f"{self.source}: "
        return f"{where}{self.field} {self.text}"


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        return int(value)
    return None


def _bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    return True if text in TRUE_WORDS else False if text in FALSE_WORDS else None


def _labels(value: Any) -> list | None:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    return None


def check_executors(executors: Any, source: str = "group_vars") -> list[Problem]:
    if executors is None:
        return [Problem(source, None, "specfleet_executors", "is not defined (a mapping name -> definition)")]
    if not isinstance(executors, Mapping) or not executors:
        return [Problem(source, None, "specfleet_executors", "must be a non-empty mapping name -> definition")]
    problems = []
    for name, definition in executors.items():
        try:
            check_definition(str(name), definition)
            chain(executors, str(name))
        except ExecutorError as exc:
            text = str(exc)
            field, _, rest = text.partition(" ")
            if not field.startswith("specfleet_executors"):
                field, rest = f"specfleet_executors.{name}", text
            problems.append(Problem(source, None, field, rest))
    return problems


def check_agent_clis(clis: Any, source: str = "group_vars", host: str | None = None) -> list[Problem]:
    field = "specfleet_agent_clis"
    if clis is None:
        return []
    if not isinstance(clis, list):
        return [Problem(source, host, field, "must be a list of {name, npm or pip, version}")]
    problems, seen = [], set()
    for index, cli in enumerate(clis):
        where = f"{field}[{index}]"
        if not isinstance(cli, Mapping):
            problems.append(Problem(source, host, where, "must be a mapping {name, npm or pip, version}"))
            continue
        unknown = sorted(set(map(str, cli)) - CLI_KEYS)
        if unknown:
            problems.append(Problem(source, host, f"{where}.{unknown[0]}", "is not a CLI setting; known: "
                                    + ", ".join(sorted(CLI_KEYS))))
        name = cli.get("name")
        if not isinstance(name, str) or not CLI_NAME.match(name):
            problems.append(Problem(source, host, f"{where}.name", f"must be a command name, not {name!r}"))
        elif name in seen:
            problems.append(Problem(source, host, f"{where}.name", f"{name!r} is listed twice"))
        seen.add(name)
        sources = [k for k in ("npm", "pip") if k in cli]
        if len(sources) != 1:
            problems.append(Problem(source, host, where, "needs exactly one of npm or pip (the package)"))
        else:
            kind = sources[0]
            package = cli[kind]
            pattern = NPM_PACKAGE if kind == "npm" else PIP_PACKAGE
            if not isinstance(package, str) or not pattern.match(package):
                problems.append(Problem(source, host, f"{where}.{kind}", f"is not a valid {kind} package name: "
                                        f"{package!r}"))
        version = str(cli.get("version", "latest"))
        if not VERSION.match(version):
            problems.append(Problem(source, host, f"{where}.version", f"must be 'latest' or one exact version "
                                    f"(e.g. 2.0.5), not {version!r}"))
        args = cli.get("version_args", ["--version"])
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            problems.append(Problem(source, host, f"{where}.version_args", "must be a list of strings"))
    return problems


def check(hosts: Mapping[str, Mapping[str, Any]], executors: Any) -> list[Problem]:
    """Every problem of the fleet: ``hosts`` maps each node of specfleet_nodes to its variables."""
    problems = check_executors(executors)
    known = set(map(str, executors)) if isinstance(executors, Mapping) else set()
    addresses: dict[tuple[str, int], str] = {}
    checked_clis: set[str] = set()
    for name in sorted(hosts):
        hv = hosts[name]
        source = str(hv.get("inventory_file") or "inventory")

        def add(field: str, text: str, _source: str = source, _name: str = name) -> None:
            problems.append(Problem(_source, _name, field, text))

        if not HOST_NAME.match(name):
            add("inventory_hostname", "must be letters, digits, '.', '_' or '-' (it names directories and "
                "store rows)")
        if "specfleet_slots" not in hv:
            add("specfleet_slots", "is missing: how many agents may run on the node at once (0 keeps it out)")
        else:
            slots = _int(hv["specfleet_slots"])
            if slots is None:
                add("specfleet_slots", f"must be a whole number, not {hv['specfleet_slots']!r}")
            elif slots < 0:
                add("specfleet_slots", f"is {slots}; it must be 0 or more")
        if "specfleet_node_priority" in hv and _int(hv["specfleet_node_priority"]) is None:
            add("specfleet_node_priority", f"must be a whole number, not {hv['specfleet_node_priority']!r}")
        if "specfleet_enabled" in hv and _bool(hv["specfleet_enabled"]) is None:
            add("specfleet_enabled", f"must be true or false, not {hv['specfleet_enabled']!r}")
        for field in ("specfleet_executor_labels", "specfleet_labels"):
            labels = _labels(hv.get(field))
            if labels is None:
                add(field, "must be a list of executor names")
                continue
            for label in labels:
                if known and label not in known:
                    add(field, f"names {label!r}, which is not an executor; defined: {', '.join(sorted(known))}")
        arch = hv.get("specfleet_arch")
        if arch is not None and str(arch) not in ARCHES:
            add("specfleet_arch", f"must be one of {', '.join(sorted(ARCHES))}, not {arch!r}")
        root = hv.get("specfleet_work_root")
        if root is not None and (not isinstance(root, str) or not root.startswith(("/", "~"))):
            add("specfleet_work_root", f"must be an absolute path (or start with ~), not {root!r}")
        clis = hv.get("specfleet_agent_clis")
        if clis is not None and repr(clis) not in checked_clis:  # group_vars: one report, not one per node
            checked_clis.add(repr(clis))
            problems.extend(check_agent_clis(clis, source, name))
        address = str(hv.get("ansible_host") or name)
        port = _int(hv.get("ansible_port", 22))
        if port is None or not 0 < port < 65536:
            add("ansible_port", f"must be a TCP port, not {hv.get('ansible_port')!r}")
            continue
        other = addresses.setdefault((address.lower(), port), name)
        if other != name:
            add("ansible_host", f"{address}:{port} is also the address of {other}; one machine would get both "
                "nodes' slots")
    return problems


def node_arch(value: str) -> str:
    """The canonical architecture name (``arm64`` -> ``aarch64``)."""
    return ARCHES.get(str(value), str(value))
