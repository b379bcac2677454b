# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``opencode`` dialect: OpenCode's ``opencode run`` (see :data:`OPENCODE_DOC`)."""
from __future__ import annotations

import json
import os
import re

try:  # inside the controller's package
    from .agent_dialect import Dialect, json_lines
except ImportError:  # copied next to this file on a node
    from agent_dialect import Dialect, json_lines  # type: ignore[no-redef]

# -- opencode: OpenCode --------------------------------------------------------------------

OPENCODE_DOC = """OpenCode (opencode-ai 1.18.33) dialect. Standard library only.

With no ``--model`` OpenCode silently uses its hosted default, and with only env keys it
auto-enables every built-in provider. So we write a config that defines one provider,
``specfleet``, and enables only it; ``--model specfleet/<model>`` and ``model`` /
``small_model`` in the config all name ``settings["model"]``. The provider's AI SDK package is
chosen by ``settings["api"]`` among the packages bundled in the opencode binary (a provider
package that is not bundled would be installed from npm at run time):

    openai     -> @ai-sdk/openai-compatible   POST {base_url}/chat/completions
    anthropic  -> @ai-sdk/anthropic           POST {base_url}/v1/messages
    responses  -> @ai-sdk/openai              POST {base_url}/responses (base_url with its /v1)
    gemini     -> @ai-sdk/google              {base_url}/v1beta/models/...

The key is passed as ``"apiKey": "{env:<key_env>}"`` (OpenCode substitutes {env:VAR} in its
config), so the secret never lands in a file.
"""

OPENCODE_PACKAGES = {
    "openai": "@ai-sdk/openai-compatible",
    "anthropic": "@ai-sdk/anthropic",
    "responses": "@ai-sdk/openai",
    "gemini": "@ai-sdk/google",
}
OPENCODE_VERSION = "1.18.33"


class Opencode(Dialect):
    __doc__ = OPENCODE_DOC

    name = "opencode"
    program = "opencode"
    prompt = "stdin"      # `opencode run` reads the message from stdin when stdin is not a TTY

    PROVIDER = "specfleet"

    @staticmethod
    def _base_url(api: str, base_url: str | None) -> str | None:
        if not base_url:
            return None
        base = base_url.rstrip("/")
        if api == "anthropic" and not base.endswith("/v1"):
            return base + "/v1"          # @ai-sdk/anthropic posts to {baseURL}/messages
        if api == "gemini" and not base.endswith("/v1beta"):
            return base + "/v1beta"
        return base                      # openai-compatible: {baseURL}/chat/completions as given

    def config(self, settings: dict) -> dict:
        api = settings.get("api") or "openai"
        if api not in OPENCODE_PACKAGES:
            raise ValueError(f"opencode dialect: api {api!r} is not supported ({' | '.join(OPENCODE_PACKAGES)})")
        model = settings["model"]
        # OpenCode reads {env:VAR} itself: the key never lands in the config file.
        key_env = settings.get("key_env")
        options: dict = {"apiKey": "{env:" + key_env + "}" if key_env else "specfleet-no-key"}
        base = self._base_url(api, settings.get("base_url"))
        if base:
            options["baseURL"] = base
        full = f"{self.PROVIDER}/{model}"
        return {
            "autoupdate": False,
            "share": "disabled",
            "snapshot": False,           # no shadow git copy of the workspace under ~/.local/share
            "lsp": False,
            "formatter": False,
            "mcp": {},
            "plugin": [],
            "enabled_providers": [self.PROVIDER],
            "model": full,
            "small_model": full,
            "provider": {self.PROVIDER: {
                "npm": OPENCODE_PACKAGES[api],
                "name": "specfleet",
                "options": options,
                "models": {model: {"name": model, "tool_call": True, "attachment": False,
                                   "limit": {"context": 128000, "output": 16384}}},
            }},
        }

    def setup(self, settings: dict, home: str, workspace: str) -> dict[str, str]:
        config_home = os.path.join(home, ".config")
        config_dir = os.path.join(config_home, "opencode")
        os.makedirs(config_dir, exist_ok=True)
        path = os.path.join(config_dir, "opencode.json")
        with open(path, "w") as f:
            json.dump(self.config(settings), f, indent=2)
        # OpenCode runs a background `npm install @opencode-ai/plugin` (registry.npmjs.org) in
        # every writable config dir whose node_modules is missing or whose package-lock.json
        # lacks a dependency of package.json. An empty node_modules and a matching
        # package.json / package-lock.json make it skip that.
        os.makedirs(os.path.join(config_dir, "node_modules"), exist_ok=True)
        deps = {"@opencode-ai/plugin": OPENCODE_VERSION}
        with open(os.path.join(config_dir, "package.json"), "w") as f:
            json.dump({"dependencies": deps}, f)
        with open(os.path.join(config_dir, "package-lock.json"), "w") as f:
            json.dump({"lockfileVersion": 3, "requires": True, "packages": {"": {"dependencies": deps}}}, f)
        tmp = os.path.join(home, "tmp")
        os.makedirs(tmp, exist_ok=True)
        return {
            "TMPDIR": tmp,                           # Bun extracts a 5.5 MB .so into $TMPDIR per run, never removed
            "XDG_CONFIG_HOME": config_home,        # OpenCode's global config dir = the one prepared above
            "OPENCODE_CONFIG": path,
            "OPENCODE_DISABLE_PROJECT_CONFIG": "1",  # no opencode.json / .opencode/ (plugins, MCP) from the repo
            "OPENCODE_DISABLE_MODELS_FETCH": "1",    # no GET https://models.opencode.ai/api.json
            "OPENCODE_DISABLE_AUTOUPDATE": "1",
            "OPENCODE_DISABLE_SHARE": "1",
            "OPENCODE_DISABLE_LSP_DOWNLOAD": "1",
            "OPENCODE_DISABLE_DEFAULT_PLUGINS": "1",
            "OPENCODE_PURE": "1",                    # no external plugins
            "npm_config_registry": "http://127.0.0.1:9/",  # any npm install left fails at once, locally
        }

    def argv(self, settings: dict, prompt_text: str, prompt_file: str) -> list[str]:
        return ["opencode", "run",
                "--format", "json",                 # one JSON event per line on stdout
                "--model", f"{self.PROVIDER}/{settings['model']}",
                "--auto",                           # approve permission asks (no TTY to ask on)
                "--title", "specfleet",             # no title-generation request
                "--print-logs", "--log-level", "INFO",   # stderr: model id, retries, errors
                ] + list(settings.get("args") or [])

    # -- the result ---------------------------------------------------------------------

    RATE = re.compile(r"\b429\b|rate[ _-]?limit|too many requests|quota|resource[ _]exhausted"
                      r"|usage limit|FreeUsageLimitError|GoUsageLimitError", re.I)
    STREAM_ERROR = re.compile(r'level=ERROR .*message="stream error" .*?error\.error="?(.*?)"?$', re.M)

    def retrying(self, text: str, patterns: list[str] | tuple[str, ...] = ()) -> str | None:
        """OpenCode's own log of a failed request it will retry (it waits out any Retry-After, uncapped)."""
        for found in self.STREAM_ERROR.finditer(text):
            if self.RATE.search(found.group(1)):
                return " ".join(found.group(1).split())[:300]
        return None

    def read(self, output: str, rc: int, timed_out: bool) -> dict:
        tokens_in = tokens_out = 0
        cost = 0.0
        steps = 0
        errors: list[dict] = []
        for event in json_lines(output):
            kind = event.get("type")
            part = event.get("part") or {}
            if kind == "step_finish":
                steps += 1
                tokens = part.get("tokens") or {}
                cache = tokens.get("cache") or {}
                tokens_in += (int(tokens.get("input") or 0) + int(cache.get("read") or 0)
                              + int(cache.get("write") or 0))
                tokens_out += int(tokens.get("output") or 0)
                cost += float(part.get("cost") or 0)
            elif kind == "error":
                errors.append(event.get("error") or {})
        models = re.findall(r"message=stream providerID=\S+ modelID=(\S+) .*?small=false", output)
        usage = None
        if steps:
            usage = {"model": models[-1] if models else None, "input_tokens": tokens_in,
                     "output_tokens": tokens_out, "cost_usd": cost or None}
        stream_errors = re.findall(r'message="stream error" .*?error\.error="?(.*?)"?$', output, re.M)
        rate_limited = False
        error = None
        for err in errors:
            data = err.get("data") or {}
            text = " ".join(str(x) for x in (err.get("name"), data.get("message"), data.get("responseBody")) if x)
            if data.get("statusCode") == 429 or self.RATE.search(text):
                rate_limited = True
        if errors:
            last = errors[-1]
            data = last.get("data") or {}
            status = data.get("statusCode")
            name = last.get("name") or "error"
            error = f"{name}{f' {status}' if status else ''}: {data.get('message') or ''}".strip()
        if not rate_limited and stream_errors and (timed_out or rc or errors):
            rate_limited = any(self.RATE.search(text) for text in stream_errors[-3:])
        if error is None and (rc or timed_out):
            if stream_errors:
                error = stream_errors[-1]
            elif timed_out:
                error = "timed out"
            else:
                lines = [ln for ln in output.splitlines() if "level=ERROR" in ln] or \
                        [ln for ln in output.splitlines() if ln.strip()]
                error = lines[-1] if lines else f"opencode exited {rc}"
        if error:
            error = error.replace("\n", " ")[:300]
        return {"usage": usage, "rate_limited": rate_limited, "error": error}
