# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``gemini`` dialect: Gemini CLI (see :data:`GEMINI_DOC`)."""
from __future__ import annotations

import json
import os
import re

try:  # inside the controller's package
    from .agent_dialect import Dialect, one_line
except ImportError:  # copied next to this file on a node
    from agent_dialect import Dialect, one_line  # type: ignore[no-redef]

# -- gemini: Gemini CLI --------------------------------------------------------------------

GEMINI_DOC = """Gemini CLI (@google/gemini-cli 0.61.0) as a specfleet agent dialect (stdlib only).

Every fact below was checked against the installed bundle and a scripted loopback server
(/tmp/dialects/try_gemini.py), as root and as an unprivileged user.

argv: ``gemini -p "" --model M --skip-trust --approval-mode yolo --output-format stream-json
--allowed-mcp-server-names specfleet-no-mcp-server --extensions none [args...]``, prompt on stdin
- ``-p ""`` forces headless mode; the CLI prepends stdin (up to 8 MiB) to the empty -p text, so the
  spec is not limited by the argv size. (As in any headless run, a prompt starting with "/" is a
  slash command and ``@path`` words are file includes.)
- ``--skip-trust`` (= GEMINI_CLI_TRUST_WORKSPACE=true): else exit 55 "not running in a trusted directory".
- ``--approval-mode yolo``: every tool call approved.
- ``--output-format stream-json``: JSONL events init/message/tool_use/tool_result/error/result; the
  ``result`` event has per-model token stats, also when the run failed (``--output-format json``
  has none on errors and prints nothing before the end).
- ``--allowed-mcp-server-names <impossible name>``: no MCP server starts, not even one that a
  workspace's .gemini/settings.json declares (an empty ``mcp.allowed`` would block nothing and the
  settings allowlists are intersected across scopes); ``--extensions none``: no extension loads.

settings (``~/.gemini/settings.json`` and, when setup runs as root, the same file as "system
settings" in a root-owned directory, see SYSTEM_SETTINGS_DIR):
- ``security.auth.selectedType: gemini-api-key``: with GOOGLE_GEMINI_BASE_URL set and no selected
  type the CLI picks its "gateway" auth type and exits 41 "Invalid auth method selected.".
- ``general.maxAttempts`` (1-10, per request, first try included) bounds the CLI's own 429/5xx
  retry loop: default 10 = ~240 s. Backoff 5 s, 10 s, 20 s, then 30 s (+0-20 % jitter), or the
  body's RetryInfo delay when longer (the Retry-After header is not read). 3 attempts ~16-19 s,
  4 attempts ~36-43 s (measured). Here max_retries + 1, capped at 4.
- model pinning: ``model.name``; ``experimental.dynamicModelConfiguration`` with
  ``modelConfigs.modelIdResolutions[M] = {default: M, contexts: []}`` (else the CLI rewrites names,
  e.g. gemini-3-pro-preview -> gemini-3.1-pro-preview(-customtools), gemini-2.5-flash ->
  gemini-3.8-flash) and ``modelConfigs.modelChains`` = [M] for every built-in chain (else a 429 on
  a flash-lite model silently falls back to gemini-3.8-flash); ``modelConfigs.customOverrides``
  set M for every internal alias (next-speaker check, loop detection, compression, summarizers,
  web fetch/search, classifier, edit fixer: gemini-3-flash-preview & co. by default).
  Three names are rewritten after all that, in the API-key content generator itself:
  gemini-3.5-flash and gemini-3-flash -> gemini-3.8-flash, gemini-3.1-flash-lite ->
  gemini-3.5-flash-lite; setup() refuses them.
- off: usage statistics (Clearcut, play.googleapis.com: the only outside host a default headless
  run contacts), telemetry, auto update + notification, IDE, subagents, extension management /
  config / registry, auto memory, checkpointing, session-retention sweeps, loop detection and
  next-speaker LLM checks, hooks, the CLI's own sandbox (docker image pull), ripgrep lookup,
  Node memory relaunch.

env: GOOGLE_GEMINI_BASE_URL (settings["base_url"], else Google's own URL pinned so a workspace
.gemini/.env cannot set it), GEMINI_API_KEY (copied from settings["key_env"] by a ``/bin/sh -c``
wrapper when the key lives elsewhere), GEMINI_CLI_SYSTEM_SETTINGS_PATH / _DEFAULTS_PATH,
GEMINI_CLI_TRUST_WORKSPACE=true, GEMINI_CLI_NO_RELAUNCH=true, GEMINI_TELEMETRY_ENABLED=false,
GEMINI_SANDBOX=false, TMPDIR=<home>/tmp (the ``gemini-client-error-*.json`` report written on an
API error goes there, not to /tmp), NO_COLOR=1, and the proxy variables pinned to the runner's own
values (else "") so a workspace .gemini/.env cannot route the key through a proxy.

Files: workspace untouched but for the agent's edits; HOME: .gemini/{settings.json, projects.json,
history/<ws>/.project_root, tmp/<ws>/.project_root, tmp/<ws>/chats/session-*.jsonl (the whole
conversation), tmp/<ws>/logs/}, tmp/gemini-client-error-*.json on API errors; nothing in /tmp.

Exit codes: 0 ok; 1 general error; 41 auth; 42 input; 53 turn limit; 55 untrusted folder; an API
error exits with its HTTP status modulo 256 (429 -> 173).
"""

class Gemini(Dialect):
    __doc__ = GEMINI_DOC

    name = "gemini"
    program = "gemini"
    prompt = "stdin"

    # how many attempts (first try included) the CLI may make per request; 4 attempts with
    # retry_after=1 took 37-43 s (measured), 5 would take ~65-78 s
    MAX_ATTEMPTS_CAP = 4

    # aliases that name a model of their own in the CLI's built-in model configs (0.61.0); an
    # override matching an alias anywhere in a request's alias chain sets the model. "base" is in
    # the chain of every utility alias that extends it and of the chat model itself.
    MODEL_ALIASES = (
        "base", "chat-base", "chat-base-2.5", "chat-base-3",
        "gemini-2.5-flash-base", "gemini-3-flash-base", "gemini-3.5-flash-base",
        "classifier", "prompt-completion", "fast-ack-helper", "edit-corrector",
        "summarizer-default", "summarizer-shell", "web-search", "web-fetch", "web-fetch-fallback",
        "loop-detection", "loop-detection-double-check", "llm-edit-fixer", "next-speaker-checker",
        "context-snapshotter", "context-calibrator",
        "chat-compression-3-pro", "chat-compression-3-flash", "chat-compression-3.1-flash-lite",
        "chat-compression-2.5-pro", "chat-compression-2.5-flash", "chat-compression-2.5-flash-lite",
        "chat-compression-default", "agent-history-provider-summarizer",
    )

    # the CLI's built-in fallback chains (0.61.0): each becomes [the configured model]
    MODEL_CHAINS = ("preview", "auto-preview", "default", "auto-default", "lite")

    @staticmethod
    def _policy(model: str) -> dict:
        return {"model": model, "isLastResort": True,
                "actions": {kind: "prompt" for kind in ("terminal", "transient", "not_found", "unknown")},
                "stateTransitions": {kind: "terminal" for kind in ("terminal", "transient", "not_found", "unknown")}}

    def _attempts(self, settings: dict) -> int:
        retries = settings.get("max_retries")
        retries = 2 if retries is None else int(retries)
        return max(1, min(self.MAX_ATTEMPTS_CAP, retries + 1))

    def config(self, settings: dict) -> dict:
        """The content of ~/.gemini/settings.json."""
        model = settings["model"]
        return {
            "security": {
                "auth": {"selectedType": "gemini-api-key"},
                "folderTrust": {"enabled": False},
            },
            "general": {
                "maxAttempts": self._attempts(settings),
                "enableAutoUpdate": False,
                "enableAutoUpdateNotification": False,
                "checkpointing": {"enabled": False},
                "sessionRetention": {"enabled": False},
                "plan": {"modelRouting": False},
            },
            "privacy": {"usageStatisticsEnabled": False},
            "telemetry": {"enabled": False, "logPrompts": False},
            "ide": {"enabled": False, "hasSeenNudge": True},
            "model": {
                "name": model,
                "skipNextSpeakerCheck": True,
                "disableLoopDetection": True,
            },
            "modelConfigs": {
                "customOverrides": [{"match": {"model": alias}, "modelConfig": {"model": model}}
                                    for alias in self.MODEL_ALIASES],
                # with experimental.dynamicModelConfiguration the name resolves to itself (without
                # it the CLI rewrites gemini-3-pro-preview to gemini-3.1-pro-preview, flash-lite
                # names to gemini-3.1/3.5-flash-lite, ...) and every fallback chain is the model alone
                "modelIdResolutions": {model: {"default": model, "contexts": []}},
                "modelChains": {chain: [self._policy(model)] for chain in self.MODEL_CHAINS},
            },
            "experimental": {
                "dynamicModelConfiguration": True,
                "enableAgents": False,
                "extensionManagement": False,
                "extensionConfig": False,
                "extensionRegistry": False,
                "autoMemory": False,
                "gemmaModelRouter": {"enabled": False},
            },
            "tools": {"useRipgrep": False, "sandbox": False},
            "hooksConfig": {"enabled": False},
            "advanced": {"autoConfigureMemory": False},
            "ui": {"hideBanner": True, "hideTips": True},
        }

    DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"

    # names the CLI rewrites right before the HTTP call whatever the settings say (API-key auth,
    # ModelMappingContentGenerator in 0.61.0): asking for them would silently ask for another model
    REWRITTEN_MODELS = {"gemini-3.5-flash": "gemini-3.8-flash", "gemini-3-flash": "gemini-3.8-flash",
                        "gemini-3.1-flash-lite": "gemini-3.5-flash-lite"}

    # variables a workspace's .gemini/.env (read because the workspace is trusted) could set when
    # they are not in the environment already: the endpoint and the proxy the key would go through
    PINNED_ENV = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy",
                  "NO_PROXY", "no_proxy")

    def setup(self, settings: dict, home: str, workspace: str) -> dict[str, str]:
        if settings.get("api", "gemini") != "gemini":
            raise ValueError(f"gemini CLI speaks only the gemini API, not {settings.get('api')!r}")
        model = str(settings["model"]).removeprefix("models/")
        if model in self.REWRITTEN_MODELS:
            raise ValueError(f"Gemini CLI always asks for {self.REWRITTEN_MODELS[model]} when told {model}; "
                             f"configure {self.REWRITTEN_MODELS[model]} (or another name) instead")
        gemini_dir = os.path.join(home, ".gemini")
        tmp = os.path.join(home, "tmp")
        os.makedirs(gemini_dir, mode=0o700, exist_ok=True)
        os.makedirs(tmp, mode=0o700, exist_ok=True)
        content = json.dumps(self.config(settings), indent=2) + "\n"
        with open(os.path.join(gemini_dir, "settings.json"), "w") as handle:
            handle.write(content)
        env = {
            "GEMINI_CLI_SYSTEM_SETTINGS_PATH": self._system_settings(content, gemini_dir),
            "GEMINI_CLI_SYSTEM_DEFAULTS_PATH": os.path.join(gemini_dir, "no-system-defaults.json"),  # absent
            "GEMINI_CLI_TRUST_WORKSPACE": "true",
            "GEMINI_CLI_NO_RELAUNCH": "true",
            "GEMINI_TELEMETRY_ENABLED": "false",
            "GEMINI_SANDBOX": "false",
            "GOOGLE_GEMINI_BASE_URL": (settings.get("base_url") or self.DEFAULT_BASE_URL).rstrip("/"),
            "TMPDIR": tmp,
            "NO_COLOR": "1",
        }
        for name in self.PINNED_ENV:
            env[name] = os.environ.get(name, "")
        return env

    # The same settings again as Gemini CLI's "system settings": merged last, so a trusted
    # workspace's own .gemini/settings.json cannot undo them (it could otherwise re-enable usage
    # statistics and telemetry, switch the auth type, the model or the retry bound). The CLI reads
    # a system settings file only when it and every directory above it are owned by root and not
    # writable by group or others (so not below /tmp or a HOME chowned to the agent): a root-owned
    # directory, one content-addressed file a settings variant (no secrets in it).
    SYSTEM_SETTINGS_DIR = "/etc/specfleet/gemini-cli"

    def _system_settings(self, content: str, gemini_dir: str) -> str:
        import hashlib
        path = os.path.join(self.SYSTEM_SETTINGS_DIR, hashlib.sha256(content.encode()).hexdigest()[:24] + ".json")
        if os.geteuid() != 0:
            return os.path.join(gemini_dir, "no-system-settings.json")   # absent: the user settings alone
        if not os.path.exists(path):
            os.makedirs(self.SYSTEM_SETTINGS_DIR, mode=0o755, exist_ok=True)
            tmp = f"{path}.{os.getpid()}.tmp"
            with open(tmp, "w") as handle:
                handle.write(content)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        return path

    def argv(self, settings: dict, prompt_text: str, prompt_file: str) -> list[str]:
        args = [self.program, "-p", "", "--model", settings["model"], "--skip-trust",
                "--approval-mode", "yolo", "--output-format", "stream-json",
                # only MCP servers of this (impossible) name may start: none from a workspace's settings
                "--allowed-mcp-server-names", "specfleet-no-mcp-server",
                "--extensions", "none",
                *[str(a) for a in settings.get("args") or []]]
        key_env = settings.get("key_env") or "GEMINI_API_KEY"
        if key_env != "GEMINI_API_KEY":
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key_env):
                raise ValueError(f"bad key_env {key_env!r}")
            # the CLI reads its key from GEMINI_API_KEY only
            return ["/bin/sh", "-c", f'GEMINI_API_KEY="${{{key_env}}}"; export GEMINI_API_KEY; exec "$0" "$@"', *args]
        return args

    # -- output ---------------------------------------------------------------------------

    _RATE = re.compile(
        r"RESOURCE_EXHAUSTED|Resource has been exhausted|RetryableQuotaError|TerminalQuotaError"
        r"|exhausted your (?:daily )?quota|exhausted your capacity|request a quota increase"
        r"|\bstatus:? 429\b|\bcode\"?:? 429\b|\b429 Too Many Requests|rate.?limit(?:ed|s)? exceeded"
        r"|Quota exceeded",
        re.IGNORECASE)

    def read(self, output: str, rc: int, timed_out: bool) -> dict:
        events, diagnostics = [], []   # JSON events (stdout); everything else is the CLI's stderr
        for line in output.splitlines():
            stripped = line.strip()
            if stripped.startswith("{") and stripped.endswith("}"):
                try:
                    event = json.loads(stripped)
                except ValueError:
                    event = None
                if isinstance(event, dict) and "type" in event:
                    events.append(event)
                    continue
            diagnostics.append(line)
        init_model = next((e.get("model") for e in events if e["type"] == "init"), None)
        result = next((e for e in reversed(events) if e["type"] == "result"), None)

        usage = None
        stats = (result or {}).get("stats") or {}
        models = {name: data for name, data in (stats.get("models") or {}).items() if isinstance(data, dict)}
        if models or "input_tokens" in stats:
            asked = [name for name, data in models.items() if (data.get("total_tokens") or 0) > 0] or list(models)
            model = ",".join(asked) if asked else init_model
            prompt, candidates, total = (_gemini_int(stats.get(k)) for k in ("input_tokens", "output_tokens", "total_tokens"))
            if prompt is not None and candidates is not None and total is not None and total > prompt + candidates:
                candidates = total - prompt   # thinking tokens: in the total, billed as output, not in output_tokens
            usage = {
                "model": model,
                "input_tokens": prompt,        # promptTokenCount summed over requests (cached included)
                "output_tokens": candidates,
                "cost_usd": None,              # Gemini CLI reports no cost
            }
        elif init_model:
            usage = {"model": init_model, "input_tokens": None, "output_tokens": None, "cost_usd": None}

        error = None
        if result and result.get("status") not in (None, "success"):
            err = result.get("error") or {}
            error = one_line(err.get("message") or err.get("type") or "the CLI reported an error", 400)
        if error is None:
            err_event = next((e for e in reversed(events) if e["type"] == "error"), None)
            if err_event and rc != 0:
                error = one_line(err_event.get("message") or "error", 400)
        if error is None and rc not in (0, None) and not timed_out:
            error = _gemini_last_error_line(output) or f"gemini exited with code {rc}"
        if timed_out and error is None:
            error = "timed out"

        # only the CLI's own words: its stderr and its error reports, never the model's text or tool output
        own = "\n".join(diagnostics + [json.dumps(e.get("error") or e.get("message") or "") for e in events
                                         if e["type"] == "error" or (e["type"] == "result" and e.get("status") != "success")])
        rate_limited = bool(self._RATE.search(own)) or rc == 429 % 256   # process.exit(429) -> 173
        return {"usage": usage, "rate_limited": rate_limited, "error": error}


def _gemini_int(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _gemini_last_error_line(output: str) -> str | None:
    for line in reversed(output.splitlines()):
        line = line.strip()
        if not line or line.startswith("at ") or line in ("}", "{"):
            continue
        if re.search(r"error|failed|invalid|not running|denied|must|cannot|unable", line, re.IGNORECASE):
            return one_line(line, 400)
    return None
