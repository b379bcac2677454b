# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Executors: the coding-agent CLIs of the inventory's ``specfleet_executors``.

One definition per name::

    glm:
      cli: claude                  # the CLI's dialect: claude, codex, opencode, gemini, aider (or custom)
      model: glm-4.6               # always named: no CLI may fall back to its own default model
      base_url: "https://api.z.ai/api/anthropic"   # the endpoint (unset: the provider's own)
      api: anthropic               # the wire API the endpoint speaks (default: the CLI's own)
      env_from_vars: {ANTHROPIC_AUTH_TOKEN: vault_zai_api_key}   # the *name* of a vault variable
      prices: {input: 0.6, output: 2.2}    # USD per million tokens, when the CLI reports no cost
      max_retries: 2               # the CLI's own retries of a failed request (bounded: fallback starts soon)
      fallback: minimax            # run when this one is rate limited
      backoff: 30s                 # wait before the fallback; doubles along the chain
      timeout: 50m                 # one agent run (default: the spec's timeout)

    mine:
      type: cli                    # or replay: apply a recorded session, no model
      command: [my-agent, --yes]   # cli: custom (no dialect): the command runs as written
      prompt: stdin                # stdin | argument (last argument) | file (path as last argument)
      rate_limit_patterns: ['\\bHTTP 429\\b']   # searched in error lines of a run's output

Secrets are never part of a definition: ``env_from_vars`` names variables (normally
from Ansible Vault) that the controller resolves when it starts an attempt and ships
in a file the runner deletes after reading.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from typing import Any

from specfleet.dispatch.jobs import ENV_NAME
from specfleet.model.durations import parse_duration

PROMPT_MODES = ("stdin", "argument", "file")
KINDS = ("cli", "replay")
# Each CLI's dialect (agents.py on the node) and the wire APIs it can speak, its own first.
CLIS = {"claude": ("anthropic",), "codex": ("responses", "openai"), "opencode": ("openai", "anthropic"),
        "gemini": ("gemini",), "aider": ("openai", "anthropic"), "custom": ()}
KNOWN_KEYS = {"type", "description", "command", "prompt", "env", "env_from_vars", "rate_limit_patterns",
              "fallback", "backoff", "timeout", "recordings", "cli", "model", "base_url", "api", "max_retries",
              "args", "prices", "rate_limit_grace"}


class ExecutorError(ValueError):
    pass


def _problem(name: str, key: str, text: str) -> ExecutorError:
    return ExecutorError(f"specfleet_executors.{name}.{key} {text}")


def check_definition(name: str, data: Any) -> dict:
    """A normalised copy of one definition, or :class:`ExecutorError` naming the field."""
    if not isinstance(data, Mapping):
        raise ExecutorError(f"specfleet_executors.{name} must be a mapping of settings")
    unknown = sorted(set(map(str, data)) - KNOWN_KEYS)
    if unknown:
        raise _problem(name, unknown[0], "is not an executor setting; known: " + ", ".join(sorted(KNOWN_KEYS)))
    out = _kind_cli_and_command(name, data)
    _model_and_endpoint(name, data, out)
    _retries_args_prices_prompt(name, data, out)
    _environment_and_patterns(name, data, out)
    _durations_and_fallback(name, data, out)
    return out


def _kind_cli_and_command(name: str, data: Mapping) -> dict:
    kind = data.get("type", "cli")
    if kind not in KINDS:
        raise _problem(name, "type", f"must be one of {', '.join(KINDS)}, not {kind!r}")
    out: dict[str, Any] = {"name": name, "kind": kind}
    cli = data.get("cli", "custom") if kind == "cli" else "custom"
    if cli not in CLIS:
        raise _problem(name, "cli", f"must be one of {', '.join(CLIS)}, not {cli!r}")
    out["cli"] = cli
    out["command"] = []
    if kind == "cli" and cli == "custom":
        command = data.get("command")
        if not isinstance(command, list) or not command or not all(isinstance(a, str) and a for a in command):
            raise _problem(name, "command", "must be a non-empty list of strings (program and arguments); or name "
                                            f"the CLI with cli: ({', '.join(c for c in CLIS if c != 'custom')})")
        out["command"] = list(command)
    elif data.get("command") is not None:
        raise _problem(name, "command", f"is not used with cli: {cli} (its dialect builds the command); extra "
                                        f"arguments go in args")
    return out


def _model_and_endpoint(name: str, data: Mapping, out: dict) -> None:
    cli = out["cli"]
    for key in ("model", "base_url"):
        value = data.get(key)
        if value is not None and (not isinstance(value, str) or not value.strip() or "\n" in value):
            raise _problem(name, key, "must be a one-line string")
        out[key] = value
    if cli != "custom" and not out["model"]:
        raise _problem(name, "model", f"is missing: without it {cli} would use a model of its own choosing")
    if out["base_url"] is not None and not re.match(r"https?://[^\s/]+", out["base_url"]):
        raise _problem(name, "base_url", f"must be an http(s) URL, not {out['base_url']!r}")
    api = data.get("api", CLIS[cli][0] if CLIS[cli] else None)
    if cli != "custom" and api not in CLIS[cli]:
        raise _problem(name, "api", f"must be one of {', '.join(CLIS[cli])} for {cli}, not {api!r}")
    out["api"] = api


def _retries_args_prices_prompt(name: str, data: Mapping, out: dict) -> None:
    retries = data.get("max_retries", 2)
    if not isinstance(retries, int) or isinstance(retries, bool) or not 0 <= retries <= 10:
        raise _problem(name, "max_retries", "must be a whole number from 0 to 10")
    out["max_retries"] = retries
    args = data.get("args", [])
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise _problem(name, "args", "must be a list of strings")
    out["args"] = list(args)
    prices = data.get("prices") or {}
    if not isinstance(prices, Mapping) or set(map(str, prices)) - {"input", "output"} or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in prices.values()):
        raise _problem(name, "prices", "must be {input: USD, output: USD} per million tokens (numbers >= 0)")
    out["prices"] = {str(k): float(v) for k, v in prices.items()}
    prompt = data.get("prompt", "stdin")
    if prompt not in PROMPT_MODES:
        raise _problem(name, "prompt", f"must be one of {', '.join(PROMPT_MODES)}, not {prompt!r}")
    out["prompt"] = prompt


def _environment_and_patterns(name: str, data: Mapping, out: dict) -> None:
    for key in ("env", "env_from_vars"):
        value = data.get(key, {}) or {}
        if not isinstance(value, Mapping):
            raise _problem(name, key, "must be a mapping NAME: value")
        for var, val in value.items():
            if not ENV_NAME.match(str(var)):
                raise _problem(name, key, f"has {var!r}, which is not a valid environment variable name")
            if not isinstance(val, (str, int, float)) or isinstance(val, bool):
                raise _problem(name, key, f"{var} must be a string")
        out[key] = {str(k): str(v) for k, v in value.items()}
    patterns = data.get("rate_limit_patterns", [])
    if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
        raise _problem(name, "rate_limit_patterns", "must be a list of regular expressions")
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise _problem(name, "rate_limit_patterns",
                           f"has {pattern!r}, which is not a valid regular expression: {exc}") from exc
    out["rate_limit_patterns"] = list(patterns)


def _durations_and_fallback(name: str, data: Mapping, out: dict) -> None:
    for key, default in (("backoff", 30), ("timeout", None), ("rate_limit_grace", 45)):
        if data.get(key) is None:
            out[key] = default
            continue
        try:
            out[key] = parse_duration(data[key])
        except ValueError as exc:
            raise _problem(name, key, str(exc)) from exc
    fallback = data.get("fallback")
    if fallback is not None and not isinstance(fallback, str):
        raise _problem(name, "fallback", "must be the name of another executor")
    out["fallback"] = fallback
    out["recordings"] = data.get("recordings", "specs/{project}/recordings")


def chain(definitions: Any, name: str) -> list[dict]:
    """``name`` and its fallbacks, in order, each checked; a fallback cycle ends the chain."""
    if not isinstance(definitions, Mapping) or not definitions:
        raise ExecutorError("specfleet_executors is not defined in the inventory (a mapping name -> definition)")
    result, seen = [], set()
    current: str | None = name
    while current is not None and current not in seen:
        if current not in definitions:
            owner = f"specfleet_executors.{result[-1]['name']}.fallback" if result else "the spec's executor"
            raise ExecutorError(f"{owner} names {current!r}, which is not defined; defined: "
                                + ", ".join(sorted(map(str, definitions))))
        seen.add(current)
        checked = check_definition(current, definitions[current])
        result.append(checked)
        current = checked["fallback"]
    return result


def runner_chain(checked: list[dict], timeout_s: int, lookup: Callable[[str], Any],
                 on_node: Collection[str] = ()) -> tuple[list[dict], dict, list[str]]:
    """The chain as the runner reads it, the secrets it needs, and notes.

    Secrets are ``{executor: {ENV: value}}`` (two executors may use the same variable
    name with different keys). ``lookup(var)`` returns a variable's value or ``None``.
    A variable the controller lacks but the node's credentials file holds (``on_node``,
    the names bootstrap recorded) is resolved by the runner there (``node_secret_env``).
    The first executor's secrets are required; a fallback whose secret is missing is
    left out of the chain (noted).
    """
    runnable, secrets, notes = [], {}, []
    for index, executor in enumerate(checked):
        values = {env: lookup(var) for env, var in executor["env_from_vars"].items()}
        node_side = {env: executor["env_from_vars"][env] for env, value in values.items()
                     if value in (None, "") and executor["env_from_vars"][env] in on_node}
        values = {env: value for env, value in values.items() if env not in node_side}
        missing = [executor["env_from_vars"][env] for env, value in values.items() if value in (None, "")]
        if missing:
            message = (f"executor {executor['name']} needs the variable {', '.join(missing)} (put the key in the "
                       f"vault); it is not defined")
            if index == 0:
                raise ExecutorError(message)
            notes.append(message + ": left out of the fallback chain")
            continue
        if values:
            secrets[executor["name"]] = {env: str(value) for env, value in values.items()}
        runnable.append({"name": executor["name"], "kind": executor["kind"], "command": executor.get("command", []),
                         "prompt": executor["prompt"], "env": executor["env"], "cli": executor["cli"],
                         "model": executor["model"], "base_url": executor["base_url"], "api": executor["api"],
                         "key_env": next(iter(executor["env_from_vars"]), None), "max_retries": executor["max_retries"],
                         "args": executor["args"], "prices": executor["prices"],
                         "rate_limit_grace_s": executor["rate_limit_grace"],
                         "secret_env": sorted([*values, *node_side]), "node_secret_env": node_side,
                         "rate_limit_patterns": executor["rate_limit_patterns"],
                         "backoff_s": executor["backoff"], "timeout_s": executor["timeout"] or timeout_s})
    return runnable, secrets, notes
