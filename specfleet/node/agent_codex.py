# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``codex`` dialect: OpenAI Codex CLI's ``codex exec`` (see :data:`CODEX_DOC`)."""
from __future__ import annotations

import json
import os
import re
from urllib.parse import urlsplit

try:  # inside the controller's package
    from .agent_dialect import Dialect, json_lines
except ImportError:  # copied next to this file on a node
    from agent_dialect import Dialect, json_lines  # type: ignore[no-redef]

# -- codex: OpenAI Codex CLI -------------------------------------------------------------

CODEX_DOC = """OpenAI Codex CLI (``codex exec``, checked with codex-cli 0.171.0): one non-interactive round.

Everything Codex is told lives in ``$CODEX_HOME/config.toml`` (``CODEX_HOME=<home>/.codex``):
a provider of our own (``model_providers.specfleet``) so the endpoint, key variable and retry
bounds are ours (``OPENAI_BASE_URL`` alone is ignored: Codex then calls api.openai.com),
approvals never asked, the workspace-write sandbox (bubblewrap), and every side channel off:
update check, analytics, feedback, OpenTelemetry exporters, the plugin marketplace sync
(github.com, api.github.com, chatgpt.com), the hosted web_search tool, and the endless
"Reconnecting... waiting for network" loop (``features.unbounded_connection_retries``).

``TMPDIR=<home>/.tmp``: Codex refuses to create its helper links (``codex-linux-sandbox``,
``apply_patch``) when CODEX_HOME is below the temporary directory, and without the
``codex-linux-sandbox`` link every sandboxed command fails (``bwrap: execvp
codex-linux-sandbox: No such file or directory``); with TMPDIR elsewhere it makes them in
``$CODEX_HOME/tmp/arg0-linux``.

Output: ``--json`` prints JSON lines: ``thread.started``, ``turn.started``, ``item.started`` /
``item.completed`` (``agent_message``, ``command_execution``, ``file_change``, and ``error``
items, which are warnings), ``error`` (a failed attempt: "Reconnecting... 1/2 (...)" or the
final reason), ``turn.completed`` (``usage``: ``input_tokens``, ``cached_input_tokens``,
``output_tokens``, ``reasoning_output_tokens``, summed over the turn's requests) or
``turn.failed`` (``error.message``). The model is in none of them: :meth:`read` takes it from
the output when it is there, else the one :meth:`argv` asked for. Codex reports no cost.
"""

CODEX_RATE_LIMIT = re.compile(r"\b429\b|too many requests|rate[ _-]?limit|quota exceeded|insufficient_quota"
                        r"|usage limit|usage_limit_reached|at capacity|overloaded", re.I)


def _toml(value) -> str:
    """A TOML value: strings as basic strings (JSON escapes are valid TOML), lists, ints, bools."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(str(value))


def _base_url(url: str | None) -> str:
    """Codex appends ``/responses``: a bare host gets OpenAI's ``/v1``."""
    if not url:
        return "https://api.openai.com/v1"
    url = url.rstrip("/")
    return url + "/v1" if urlsplit(url).path in ("", "/") else url


class Codex(Dialect):
    __doc__ = CODEX_DOC

    def retrying(self, text: str, patterns: list[str] | tuple[str, ...] = ()) -> str | None:
        """Codex's own report that it is retrying a rate limit (an ``error`` event: "Reconnecting... n/N (...429...)")."""
        for event in json_lines(text):
            message = str(event.get("message") or "")
            if event.get("type") == "error" and CODEX_RATE_LIMIT.search(message):
                return " ".join(message.split())[:300]
        return None

    name = "codex"
    program = "codex"
    prompt = "stdin"

    def __init__(self):
        self._model: str | None = None   # what argv() asked for (codex's JSON output never names it)

    def config(self, settings: dict) -> str:
        api = settings.get("api") or "responses"
        if api != "responses":
            raise ValueError(f"codex speaks only the Responses API (wire_api \"chat\" was removed); "
                             f"settings api is {api!r}")
        retries = settings.get("max_retries")
        retries = 1 if retries is None else max(0, int(retries))
        key_env = settings.get("key_env") or "OPENAI_API_KEY"
        top = {
            "model": settings["model"],
            "model_provider": "specfleet",
            "approval_policy": "never",
            "sandbox_mode": "workspace-write",
            "check_for_update_on_startup": False,
            "web_search": "disabled",
        }
        tables = {
            "analytics": {"enabled": False},
            "feedback": {"enabled": False},
            "otel": {"exporter": "none", "trace_exporter": "none", "metrics_exporter": "none",
                     "log_user_prompt": False},
            "history": {"persistence": "none"},
            "features": {"unbounded_connection_retries": False, "plugins": False},
            # the commands the model runs get no key: Codex's own *KEY*/*SECRET*/*TOKEN* excludes
            # (only applied when ignore_default_excludes is false) plus the key variable and others
            "shell_environment_policy": {"inherit": "all", "ignore_default_excludes": False,
                                         "exclude": [key_env, "*_AUTH", "*PASSWORD*", "*CREDENTIAL*"]},
            "model_providers.specfleet": {
                "name": "specfleet",
                "base_url": _base_url(settings.get("base_url")),
                "wire_api": "responses",
                "env_key": key_env,
                "request_max_retries": retries,   # transport retries (5xx, connection); 429 is not one
                "stream_max_retries": retries,    # the turn's "Reconnecting... n/N" retries, 429 included
            },
        }
        lines = [f"{key} = {_toml(value)}" for key, value in top.items()]
        for table, values in tables.items():
            lines += ["", f"[{table}]"] + [f"{key} = {_toml(value)}" for key, value in values.items()]
        return "\n".join(lines) + "\n"

    def setup(self, settings: dict, home: str, workspace: str) -> dict[str, str]:
        codex_home = os.path.join(home, ".codex")
        tmp = os.path.join(home, ".tmp")
        for folder in (codex_home, tmp):
            os.makedirs(folder, mode=0o700, exist_ok=True)
        path = os.path.join(codex_home, "config.toml")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(self.config(settings))
        os.chmod(path, 0o600)
        return {"CODEX_HOME": codex_home, "TMPDIR": tmp}

    def argv(self, settings: dict, prompt_text: str, prompt_file: str) -> list[str]:
        self._model = settings["model"]
        return [self.program, "exec", "--json", "--color", "never", "--skip-git-repo-check",
                "-m", settings["model"], *[str(a) for a in settings.get("args") or []], "-"]

    def read(self, output: str, rc: int, timed_out: bool) -> dict:
        events = [event for event in json_lines(output) if isinstance(event.get("type"), str)]

        model = None
        tokens_in = tokens_out = None
        errors: list[str] = []          # top-level "error" events: retries and the final reason
        failed = None                   # turn.failed
        completed = False
        for event in events:
            kind = event["type"]
            if isinstance(event.get("model"), str):
                model = event["model"]
            if kind == "turn.completed":
                completed = True
                usage = event.get("usage") or {}
                if isinstance(usage.get("input_tokens"), int):
                    tokens_in = (tokens_in or 0) + usage["input_tokens"]
                if isinstance(usage.get("output_tokens"), int):
                    tokens_out = (tokens_out or 0) + usage["output_tokens"]
            elif kind == "turn.failed":
                failed = str((event.get("error") or {}).get("message") or "the turn failed")
            elif kind == "error":
                errors.append(str(event.get("message") or ""))
            elif kind == "item.completed" and (event.get("item") or {}).get("type") == "error":
                found = re.search(r"Model metadata for `([^`]+)`", str(event["item"].get("message") or ""))
                model = model or (found.group(1) if found else None)
        if model is None:
            found = re.search(r"^model:\s*(\S+)\s*$", output, re.M)   # the plain-text header
            model = found.group(1) if found else self._model

        plain_error = None
        for line in output.splitlines():
            if re.match(r"\s*(?:Error|ERROR)\b[:\s]", line) and not line.lstrip().startswith("{"):
                plain_error = line.strip()
        if failed:
            error = failed
        elif rc != 0 or timed_out or not completed:
            error = (errors[-1] if errors else None) or plain_error
            if timed_out:
                error = f"timed out; last: {error}" if error else "timed out"
            elif error is None and rc != 0:
                error = f"codex exited with {rc}"
        else:
            error = None
        if error:
            error = " ".join(error.split())[:300]

        last_attempt = errors[-1] if errors else ""
        rate_limited = bool(error and CODEX_RATE_LIMIT.search(error)) or (
            (timed_out or rc != 0 or not completed) and bool(CODEX_RATE_LIMIT.search(last_attempt)))

        usage = None
        if completed or tokens_in is not None or tokens_out is not None:
            usage = {"model": model, "input_tokens": tokens_in, "output_tokens": tokens_out, "cost_usd": None}
        return {"usage": usage, "rate_limited": rate_limited, "error": error}
