# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""How each coding-agent CLI is run and read (node side; Python standard library only).

One *dialect* per CLI turns an executor's settings (model, endpoint, wire API, key variable,
retry bound) into that CLI's own mechanisms (flags, environment, a config file in the
agent's private HOME), and reads what the CLI printed: usage (model, tokens, cost), whether
a rate limit stopped it, and the error it reported. A definition without ``cli`` is
``custom``: its ``command`` runs as written and only the text patterns below read it.

The runner never runs an agent as root: :class:`AgentUser` is who it runs as.

Shipped to each node with ``runner.py`` and ``paths.py``.
"""
from __future__ import annotations

import json
import os
import pwd
import re
import shutil
from urllib.parse import urlsplit

# A rate limit is read from error lines only, never from a file name or the agent's prose:
# a line must look like an error report, and the pattern must be in HTTP or API context.
ERROR_LINE = re.compile(r"\b(?:error|exception|failed|failure|status(?:[ _]code)?|retry(?:ing)?|warn(?:ing)?)\b"
                        r"|^\s*(?:HTTP|\[?\d{3}\]?\s)", re.I)
DEFAULT_RATE_LIMIT_PATTERNS = (
    r"(?:\bHTTP(?:/[\d.]+)?|\bstatus(?:[ _]?code)?|\bcode|\berror)\W{0,3}429\b",
    r"\b429\W{0,3}(?:too many requests|rate)",
    r"\brate[ _-]?limit(?:ed|[ _]error|[ _]exceeded|\b)",
    r"\btoo many requests\b",
    r"\bquota (?:exceeded|exhausted)\b",
    r"\bresource[ _]exhausted\b",
    r"\busage limit\b",
    r"\boverloaded(?:_error)?\b",
)


def rate_limit_line(text: str, patterns: list[str] | tuple[str, ...] = ()) -> str | None:
    """The first error line of ``text`` that reports a rate limit, or None."""
    compiled = [re.compile(p, re.I) for p in (patterns or DEFAULT_RATE_LIMIT_PATTERNS)]
    for line in text.splitlines():
        if len(line) < 2000 and ERROR_LINE.search(line) and any(p.search(line) for p in compiled):
            return line.strip()[:300]
    return None


def json_lines(output: str) -> list[dict]:
    """Every line of ``output`` that is a JSON object (CLIs mix them with plain text)."""
    found = []
    for line in output.splitlines():
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                found.append(value)
    return found


class Dialect:
    """The base: ``custom`` executors run their ``command`` as written."""
    name = "custom"
    program = ""
    prompt = "stdin"

    def setup(self, settings: dict, home: str, workspace: str) -> dict[str, str]:
        """Write the CLI's config files below ``home``; -> extra environment variables."""
        return {}

    def argv(self, settings: dict, prompt_text: str, prompt_file: str) -> list[str]:
        args = [str(a).replace("{prompt_file}", prompt_file) for a in settings.get("command") or []]
        mode = settings.get("prompt") or self.prompt
        if mode == "argument" and "{prompt}" not in " ".join(args):
            args.append(prompt_text)
        elif mode == "file" and prompt_file not in args:
            args.append(prompt_file)
        return [a.replace("{prompt}", prompt_text) for a in args]

    def read(self, output: str, rc: int, timed_out: bool) -> dict:
        """Usage, rate limit and error from the CLI's own output (a custom CLI: the runner reads its error lines)."""
        return {"usage": None, "rate_limited": False, "error": None}

    def retrying(self, text: str, patterns: list[str] | tuple[str, ...] = ()) -> str | None:
        """A line of fresh output saying the CLI is retrying a rate limit right now, or None.

        The runner stops a run still going ``rate_limit_grace`` after such a line. A custom
        CLI's error lines count; a dialect says it only from the CLI's own retry reports
        (never from the conversation it streams, where a test may well print "429"), or
        not at all when the CLI's own retries are bounded by its settings.
        """
        return rate_limit_line(text, patterns) if self.name == "custom" else None


# -- claude: Claude Code -----------------------------------------------------------------

CLAUDE_DOC = """Dialect "claude": Claude Code (``claude`` 2.1.337, native build) in print mode.

    claude -p --output-format stream-json --verbose --model MODEL --settings '{"model":..,"env":{..}}'
           --strict-mcp-config --no-session-persistence --dangerously-skip-permissions [ARGS...]  < prompt_file

The prompt comes on stdin.  Every request goes to ``ANTHROPIC_BASE_URL`` with ``settings["model"]``:
``--model`` plus ``ANTHROPIC_MODEL`` and every alias / background-model / subagent variable set to it,
in the process environment and again in ``--settings`` (which outranks a repo's .claude/settings.json,
whose "env" would otherwise override the process environment).
HTTP 429 is retried by Claude Code itself ``CLAUDE_CODE_MAX_RETRIES`` times (default 10: ~174 s
with Retry-After: 1); the backoff is about max(Retry-After, 0.5 s * 2^n) + jitter, capped near 32 s,
so the dialect clamps the count to 6 (~38 s until exit 1 with Retry-After: 1).

Permissions: ``--dangerously-skip-permissions`` (bypassPermissions) is what the agent user runs
with.  Claude Code refuses it as root (exit 1, "cannot be used with root/sudo privileges") unless
the undocumented ``IS_SANDBOX=1`` is set.  The documented modes that work as root are
``--permission-mode dontAsk|acceptEdits`` with allow rules: when ``settings["args"]`` names a
``--permission-mode`` the dialect leaves out its own bypass flag and adds ``--allowedTools``
(unless the args give their own).  dontAsk still denies writes to protected paths (.git, .claude).
"""

_TOKEN_KEYS = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN")
# every way Claude Code picks a model by itself: aliases, background ("small/fast") calls, subagents
_MODEL_ENV = ("ANTHROPIC_MODEL", "ANTHROPIC_SMALL_FAST_MODEL", "ANTHROPIC_DEFAULT_HAIKU_MODEL",
              "ANTHROPIC_DEFAULT_SONNET_MODEL", "ANTHROPIC_DEFAULT_OPUS_MODEL", "ANTHROPIC_DEFAULT_FABLE_MODEL",
              "CLAUDE_CODE_SUBAGENT_MODEL")
_QUIET_ENV = {
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",   # telemetry, error reports, feature flags, update checks
    "DISABLE_TELEMETRY": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_UPDATES": "1",
    "CLAUDE_CODE_DISABLE_FEEDBACK_SURVEY": "1",
    "CLAUDE_CODE_DISABLE_OFFICIAL_MARKETPLACE_AUTOINSTALL": "1",
    "CLAUDE_CODE_DISABLE_TERMINAL_TITLE": "1",
}
_ALLOWED_TOOLS = "Bash,Edit,Write,Read,NotebookEdit,Agent,Skill,Workflow"
MAX_RETRIES_BOUND = 6          # 7 would be ~72 s of backoff, 6 is ~37 s
DEFAULT_MAX_RETRIES = 4        # ~10 s


def _one_line(text: str, limit: int = 300) -> str:
    """``text`` on one line, terminal colour codes dropped, cut at ``limit``."""
    return " ".join(re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", str(text)).split())[:limit]


class Claude(Dialect):
    __doc__ = CLAUDE_DOC

    def retrying(self, text: str, patterns: list[str] | tuple[str, ...] = ()) -> str | None:
        """Claude Code's own report that it is retrying a 429 (a stream-json ``api_retry`` event)."""
        for event in json_lines(text):
            if event.get("type") == "system" and event.get("subtype") == "api_retry" and (
                    event.get("error_status") == 429 or event.get("error") == "rate_limit"):
                return f"Claude Code is retrying a rate limit (attempt {event.get('attempt', '?')})"
        return None

    name = "claude"
    program = "claude"
    prompt = "stdin"

    # -- before the run -------------------------------------------------------------------

    def setup(self, settings: dict, home: str, workspace: str) -> dict[str, str]:
        tmp_dir = os.path.join(home, ".tmp")
        os.makedirs(tmp_dir, mode=0o700, exist_ok=True)

        # ~/.claude.json: the global config; onboarding marked done (print mode never shows it anyway)
        with open(os.path.join(home, ".claude.json"), "w") as fh:
            json.dump({"hasCompletedOnboarding": True}, fh, indent=2)
        env = self._pinned_env(settings)
        env["CLAUDE_CODE_TMPDIR"] = tmp_dir          # else /tmp/claude-<uid>, /tmp/cc-socks-<uid>
        return env

    @staticmethod
    def _pinned_env(settings: dict) -> dict[str, str]:
        model = settings["model"]
        env = dict(_QUIET_ENV)
        env.update({name: model for name in _MODEL_ENV})
        if settings.get("base_url"):
            env["ANTHROPIC_BASE_URL"] = settings["base_url"].rstrip("/")
        retries = settings.get("max_retries")
        retries = DEFAULT_MAX_RETRIES if retries is None else int(retries)
        env["CLAUDE_CODE_MAX_RETRIES"] = str(max(0, min(retries, MAX_RETRIES_BOUND)))
        return env

    def argv(self, settings: dict, prompt_text: str, prompt_file: str) -> list[str]:
        extra = [str(a) for a in settings.get("args") or []]
        # --settings outranks the repo's .claude/settings*.json, whose "env" would otherwise beat the
        # process environment (base URL, model, retries); the repo's CLAUDE.md and other settings still apply
        pinned = {"model": settings["model"], "env": self._pinned_env(settings)}
        key_env = settings.get("key_env") or "ANTHROPIC_API_KEY"
        if key_env not in _TOKEN_KEYS:
            # Claude Code reads only ANTHROPIC_API_KEY / ANTHROPIC_AUTH_TOKEN; a key in any other
            # variable is handed over by an apiKeyHelper (sent as x-api-key and Authorization: Bearer)
            pinned["apiKeyHelper"] = f"printenv {key_env}"
        argv = [self.program, "-p", "--output-format", "stream-json", "--verbose",
                "--model", settings["model"],
                "--settings", json.dumps(pinned, separators=(",", ":")),
                "--strict-mcp-config",              # no MCP servers but those of --mcp-config in args
                "--no-session-persistence"]
        chosen = any(a == "--permission-mode" or a.startswith("--permission-mode=")
                     or a in ("--dangerously-skip-permissions", "--allow-dangerously-skip-permissions")
                     for a in extra)
        if not chosen:
            argv.append("--dangerously-skip-permissions")
        elif not any(a.split("=", 1)[0] in ("--allowedTools", "--allowed-tools") for a in extra):
            argv += ["--allowedTools", _ALLOWED_TOOLS]
        return argv + extra

    # -- after the run --------------------------------------------------------------------

    def read(self, output: str, rc: int, timed_out: bool) -> dict:
        events, plain = [], []
        for line in (output or "").splitlines():
            text = line.strip()
            if text.startswith("{"):
                try:
                    item = json.loads(text)
                except ValueError:
                    plain.append(text)
                    continue
                if isinstance(item, dict):
                    events.append(item)
                    continue
            if text:
                plain.append(text)

        result = next((e for e in reversed(events) if e.get("type") == "result"), None)
        rate_limited = False
        for e in events:
            if e.get("type") == "system" and e.get("subtype") == "api_retry" and \
                    (e.get("error_status") == 429 or e.get("error") == "rate_limit"):
                rate_limited = True
            if e.get("api_error_status") == 429 or e.get("api_error_type") == "rate_limit_error" \
                    or e.get("error") in ("rate_limit", "billing_error"):
                rate_limited = True
        if not events:
            low = (output or "").lower()
            rate_limited = any(s in low for s in ("429", "rate_limit_error", "rate limit", "usage limit"))

        usage = self._usage(result, events)
        error = None
        if result is not None and (result.get("is_error") or result.get("subtype") != "success"):
            error = _one_line(result.get("result") or ", ".join(result.get("errors") or [])
                              or result.get("terminal_reason") or result.get("subtype") or "error")
        if error is None and timed_out:
            error = "timed out"
        if error is None and (rc != 0 or result is None):
            tail = next((p for p in reversed(plain) if not p.startswith("[claude-code:")), None)
            error = _one_line(tail or f"exit status {rc}, no result")
        # A 429 Claude Code retried past is no rate limit: only a run that did not end well has one.
        return {"usage": usage, "rate_limited": rate_limited and error is not None, "error": error}

    @staticmethod
    def _usage(result: dict | None, events: list[dict]) -> dict | None:
        if result is not None:
            per_model = result.get("modelUsage") or {}
            if per_model:
                main = max(per_model, key=lambda m: (per_model[m].get("outputTokens") or 0)
                           + (per_model[m].get("inputTokens") or 0))
                tin = sum((u.get("inputTokens") or 0) + (u.get("cacheReadInputTokens") or 0)
                          + (u.get("cacheCreationInputTokens") or 0) for u in per_model.values())
                tout = sum(u.get("outputTokens") or 0 for u in per_model.values())
                guessed = all(u.get("costBasis") == "unknown" for u in per_model.values())
                cost = result.get("total_cost_usd")
                return {"model": main, "input_tokens": tin, "output_tokens": tout,
                        "cost_usd": None if guessed or cost is None else float(cost)}
            u = result.get("usage") or {}
            tin = sum(u.get(k) or 0 for k in ("input_tokens", "cache_read_input_tokens",
                                               "cache_creation_input_tokens"))
            if tin or u.get("output_tokens"):
                return {"model": None, "input_tokens": tin, "output_tokens": u.get("output_tokens") or 0,
                        "cost_usd": result.get("total_cost_usd")}
            return None
        # no result (killed / timed out): add up the assistant messages streamed so far
        seen, model, tin, tout = set(), None, 0, 0
        for e in events:
            msg = e.get("message") if e.get("type") == "assistant" else None
            if not isinstance(msg, dict) or msg.get("model") in (None, "<synthetic>") or msg.get("id") in seen:
                continue
            seen.add(msg.get("id"))
            u = msg.get("usage") or {}
            model = msg["model"]
            tin += sum(u.get(k) or 0 for k in ("input_tokens", "cache_read_input_tokens",
                                                "cache_creation_input_tokens"))
            tout += u.get("output_tokens") or 0
        if model is None:
            return None
        return {"model": model, "input_tokens": tin, "output_tokens": tout, "cost_usd": None}


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


# -- aider: aider --------------------------------------------------------------------------

AIDER_DOC = """aider (aider-chat 0.86.2) dialect. Standard library only.

aider does not use tool calls: it edits through a text edit format. We force ``--edit-format
whole`` (the model answers with a *file listing*: the path on one line, then the whole new
content in a fenced block), which needs no knowledge of the old content and also creates new
files. aider applies an edit to a file not "in the chat" after a confirm that ``--yes-always``
answers yes; files of the git repo named in the prompt (by their relative path, or by a unique
basename containing ``.``, ``_``, ``-`` or ``/``) are added to the chat before the first request
(``check_for_file_mentions`` on the user message), so the model sees their content.

aider runs through a small Python wrapper in its own interpreter (read from the ``aider``
script's shebang) so that: its own retry loop is bounded by ``settings["max_retries"]`` (aider
hard-codes RETRY_TIMEOUT = 60 s, ~64 s of sleeps, plus the OpenAI SDK's own retries: ~85 s
measured); the key in ``settings["key_env"]`` reaches litellm as OPENAI_API_KEY /
ANTHROPIC_API_KEY; no browser is ever opened; and a request that finally failed (429 after
the retries, auth error, ...) exits 1 instead of aider's 0; and a prompt starting with "/" or
"!" is not run as an aider command (``!cmd`` would run a shell command); and the workspace's
own ``.aider.conf.yml`` and ``.env`` files are not read (a repo could otherwise set, e.g.,
OPENAI_API_BASE / OPENAI_API_KEY / lint or test commands; only $HOME/.aider.conf.yml counts).
If the interpreter cannot be found, plain ``aider`` is run (then the bound is aider's ~64 s of
sleeps, rc stays 0 on failure, and the key must already be in OPENAI_API_KEY).

Retries: n = settings["max_retries"] (default 4, at most 7) retries after the first failed
request, sleeping 0.25, 0.5, ... 0.125*2**n s (0.25*(2**n - 1) s in all; n=4: 3.75 s, n=7:
31.75 s); the SDK under litellm does not retry (extra_params max_retries 0). Retry-After is
not honoured by aider's loop.
"""

class Aider(Dialect):
    __doc__ = AIDER_DOC

    name = "aider"
    program = "aider"
    prompt = "file"          # --message-file <prompt_file>

    DEFAULT_RETRIES = 4      # aider's own retries after a failed request: 0.25+0.5+1+2 s of sleep
    MAX_RETRIES = 7          # 31.75 s of sleep (aider's built-in RETRY_TIMEOUT 60 s: 8 retries, 63.75 s)

    # -- helpers ------------------------------------------------------------------------

    @staticmethod
    def _api(settings: dict) -> str:
        api = settings.get("api") or "openai"
        if api not in ("openai", "anthropic"):
            raise ValueError(f"aider dialect: api {api!r} is not supported (openai | anthropic)")
        return api

    def _model(self, settings: dict) -> str:
        return f"{self._api(settings)}/{settings['model']}"

    def _retries(self, settings: dict) -> int:
        value = settings.get("max_retries")
        if value is None:
            return self.DEFAULT_RETRIES
        return max(0, min(int(value), self.MAX_RETRIES))

    @staticmethod
    def _python() -> str | None:
        """aider's interpreter, from the console script's shebang."""
        path = shutil.which("aider")
        if not path:
            return None
        try:
            with open(path, "rb") as f:
                first = f.readline().decode("utf-8", "replace").strip()
        except OSError:
            return None
        if first.startswith("#!") and "python" in first and " " not in first[2:].strip():
            return first[2:].strip()
        return None

    # -- the interface ------------------------------------------------------------------

    def setup(self, settings: dict, home: str, workspace: str) -> dict[str, str]:
        model = self._model(settings)
        state = os.path.join(home, ".aider")
        os.makedirs(state, exist_ok=True)
        # Model metadata: aider otherwise downloads litellm's price list from GitHub into
        # ~/.aider/caches for a model it does not know. No prices: aider reports no cost.
        metadata = os.path.join(home, ".aider.model.metadata.json")
        with open(metadata, "w") as f:
            json.dump({model: {"max_input_tokens": 200000, "max_output_tokens": 32000,
                               "litellm_provider": self._api(settings), "mode": "chat"}}, f, indent=1)
        # Merged into every model's litellm kwargs: no hidden OpenAI/Anthropic SDK retries
        # (aider's own loop does the retrying, bounded by the wrapper).
        model_settings = os.path.join(home, ".aider.model.settings.yml")
        with open(model_settings, "w") as f:
            json.dump([{"name": "aider/extra_params", "extra_params": {"max_retries": 0}}], f, indent=1)
        # Analytics: permanently off, never asked.
        with open(os.path.join(state, "analytics.json"), "w") as f:
            json.dump({"uuid": "00000000-0000-4000-8000-000000000000", "permanently_disable": True,
                       "asked_opt_in": True}, f)
        env = {
            "AIDER_MODEL_METADATA_FILE": metadata,
            "AIDER_MODEL_SETTINGS_FILE": model_settings,
            "AIDER_CHAT_HISTORY_FILE": os.path.join(state, "chat.history.md"),
            "AIDER_INPUT_HISTORY_FILE": os.path.join(state, "input.history"),
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",   # litellm: no price-list download at import
            "BROWSER": "true",                          # webbrowser.open() runs `true <url>`
            "GIT_TERMINAL_PROMPT": "0",
            "COLUMNS": "1000",                          # rich: do not wrap error lines at 80 columns
        }
        api = self._api(settings)
        key_var = "OPENAI_API_KEY" if api == "openai" else "ANTHROPIC_API_KEY"
        if not settings.get("key_env"):
            env[key_var] = "specfleet-no-key"           # litellm refuses to send without a key
        if api == "anthropic" and settings.get("base_url"):
            env["ANTHROPIC_API_BASE"] = settings["base_url"]   # litellm appends /v1/messages
        return env

    def argv(self, settings: dict, prompt_text: str, prompt_file: str) -> list[str]:
        api = self._api(settings)
        model = self._model(settings)
        args = [
            "--model", model, "--weak-model", model, "--editor-model", model,
            "--edit-format", "whole",
            "--message-file", prompt_file,
            "--yes-always",
            "--no-stream",                 # usage from the provider's response, not a local estimate
            "--no-pretty", "--no-fancy-input", "--no-multiline", "--no-notifications",
            "--no-gitignore",              # do not add .aider* to .gitignore
            "--map-tokens", "0",           # no repo map: no .aider.tags.cache.v4/ in the workspace
            "--no-auto-commits", "--no-dirty-commits",   # leave committing to specfleet
            "--no-auto-lint", "--no-auto-test",
            "--no-suggest-shell-commands", "--no-detect-urls",
            "--no-check-update", "--no-show-release-notes",
            "--analytics-disable", "--no-analytics",
            "--no-show-model-warnings", "--no-check-model-accepts-settings",
            "--no-restore-chat-history",
            "--encoding", "utf-8",
        ]
        if api == "openai" and settings.get("base_url"):
            args += ["--openai-api-base", settings["base_url"]]
        args += list(settings.get("args") or [])
        python = self._python()
        if not python:
            return ["aider"] + args
        key_var = "OPENAI_API_KEY" if api == "openai" else "ANTHROPIC_API_KEY"
        retry_timeout = 0.125 * 2 ** self._retries(settings)
        code = (
            "import os,sys\n"
            f"k={settings.get('key_env') or ''!r}\n"
            f"if k and os.environ.get(k): os.environ[{key_var!r}]=os.environ[k]\n"
            "import aider.models as m, aider.coders.base_coder as b, aider.io as i\n"
            f"m.RETRY_TIMEOUT=b.RETRY_TIMEOUT={retry_timeout!r}\n"
            "i.InputOutput.offer_url=lambda self,*a,**kw: False\n"
            "import aider.commands as c\n"
            "c.Commands.is_command=lambda self,inp: False\n"
            "import json, aider.analytics as an\n"
            "_e=an.Analytics.event\n"
            "def _event(self,name,main_model=None,**kw):\n"
            "    if name=='message_send':\n"
            "        print('specfleet-aider-usage: '+json.dumps(dict(kw,main_model=getattr(main_model,'name',None))),"
            "file=sys.stderr,flush=True)\n"
            "    return _e(self,name,main_model,**kw)\n"
            "an.Analytics.event=_event\n"
            "failed=[]\n"
            "_c=b.Coder.check_and_open_urls\n"
            "def _check(self,exc,friendly_msg=None):\n"
            "    failed.append(type(exc).__name__)\n"
            "    print('specfleet-aider: request failed: '+type(exc).__name__, file=sys.stderr)\n"
            "    return _c(self,exc,friendly_msg)\n"
            "b.Coder.check_and_open_urls=_check\n"
            "import aider.main as am\n"
            "_gp=am.get_parser\n"
            "home=os.path.expanduser('~')\n"
            "am.get_parser=lambda files,root: _gp([f for f in files if os.path.dirname(f)==home],root)\n"
            "am.load_dotenv_files=lambda *a,**kw: []\n"
            "sys.argv[0]='aider'\n"
            "rc=am.main()\n"
            "sys.exit(rc if rc else (1 if failed else 0))\n"
        )
        return [python, "-c", code] + args

    # -- the result ---------------------------------------------------------------------

    TOKENS = re.compile(r"^Tokens: ([\d.]+k?) sent(?:, [\d.]+k? cache write)?(?:, [\d.]+k? cache hit)?, "
                        r"([\d.]+k?) received\.(?: Cost: \$([\d.]+) message, \$([\d.]+) session\.)?", re.M)
    RATE_LINE = re.compile(r"^(?:litellm\.RateLimitError:|specfleet-aider: request failed: RateLimitError"
                           r"|The API provider has rate limited you\.)", re.M)

    @staticmethod
    def _count(text: str) -> int:
        return int(round(float(text[:-1]) * 1000)) if text.endswith("k") else int(text)

    def read(self, output: str, rc: int, timed_out: bool) -> dict:
        # usage: one "specfleet-aider-usage: {json}" line per answered request (the wrapper
        # prints aider's own message_send analytics event: exact provider token counts)
        usage = None
        model = None
        tokens_in = tokens_out = events = 0
        cost = None
        for line in output.splitlines():
            if not line.startswith("specfleet-aider-usage: "):
                continue
            try:
                props = json.loads(line.split(": ", 1)[1])
            except ValueError:
                continue
            events += 1
            model = props.get("main_model") or model
            tokens_in += int(props.get("prompt_tokens") or 0)
            tokens_out += int(props.get("completion_tokens") or 0)
            if props.get("total_cost"):
                cost = float(props["total_cost"])
        if events:
            usage = {"model": model, "input_tokens": tokens_in, "output_tokens": tokens_out, "cost_usd": cost}
        else:   # plain aider (no wrapper): the human "Tokens: 1.2k sent, 321 received." lines (rounded)
            found = self.TOKENS.findall(output)
            if found:
                m = re.search(r"^Model: (\S+)", output, re.M)
                costs = [float(c[3]) for c in found if c[3]]
                usage = {"model": m.group(1) if m else None,
                         "input_tokens": sum(self._count(f[0]) for f in found),
                         "output_tokens": sum(self._count(f[1]) for f in found),
                         "cost_usd": costs[-1] if costs and costs[-1] else None}
        if usage and usage["model"]:
            provider, _, name = usage["model"].partition("/")
            if provider in ("openai", "anthropic") and name:
                usage["model"] = name
        rate_limited = bool(self.RATE_LINE.search(output))
        failures = re.findall(r"^specfleet-aider: request failed: (\w+)", output, re.M)
        errors = re.findall(r"^litellm\.(\w+): (.*)$", output, re.M)
        error = None
        if failures or (rc and not timed_out) or (errors and not usage):
            if errors:
                error = f"{errors[-1][0]}: {errors[-1][1]}"
            elif failures:
                error = f"request failed: {failures[-1]}"
            else:
                lines = [ln for ln in output.splitlines() if ln.strip()]
                error = lines[-1] if lines else f"aider exited {rc}"
        elif timed_out:
            error = "timed out"
        return {"usage": usage, "rate_limited": rate_limited, "error": error[:300] if error else None}



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
            error = _one_line(err.get("message") or err.get("type") or "the CLI reported an error", 400)
        if error is None:
            err_event = next((e for e in reversed(events) if e["type"] == "error"), None)
            if err_event and rc != 0:
                error = _one_line(err_event.get("message") or "error", 400)
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
            return _one_line(line, 400)
    return None



DIALECTS: dict[str, Dialect] = {"custom": Dialect(), "claude": Claude(), "codex": Codex(), "opencode": Opencode(),
                                "gemini": Gemini(), "aider": Aider()}


def dialect(name: str | None) -> Dialect:
    return DIALECTS.get(name or "custom", DIALECTS["custom"])


# -- who runs the agent ------------------------------------------------------------------

class AgentUser:
    """The unprivileged user agents and verify commands run as.

    A runner started as root (e.g. a node whose login user is root) switches to ``name``
    for every command of the agent's; it refuses to run agents as root. A runner started
    as another user runs them as itself (production logs in as the agent user).
    """

    def __init__(self, name: str | None):
        self.switch = os.geteuid() == 0
        if not self.switch:
            entry = pwd.getpwuid(os.geteuid())
        else:
            if not name or name == "root":
                raise PermissionError("agents never run as root: this runner runs as root, and specfleet_agent_user "
                                      f"is {name or 'not set'}; set it to the unprivileged user bootstrap creates")
            try:
                entry = pwd.getpwnam(name)
            except KeyError:
                raise PermissionError(f"the agent user {name!r} does not exist on this node (run bootstrap.yml "
                                      f"for it, or scripts/setup.sh for the local cluster)") from None
            if entry.pw_uid == 0:
                raise PermissionError(f"the agent user {name!r} has uid 0: agents never run as root")
        self.name, self.uid, self.gid = entry.pw_name, entry.pw_uid, entry.pw_gid

    def preexec(self):
        """For ``subprocess.Popen(preexec_fn=...)``: drop to the agent user (None: already it)."""
        if not self.switch:
            return None
        uid, gid = self.uid, self.gid

        def drop() -> None:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
        return drop

    def own(self, *paths: str) -> None:
        """Give ``paths`` (recursively, links not followed) to the agent user."""
        if not self.switch:
            return
        for top in paths:
            os.lchown(top, self.uid, self.gid)
            for folder, dirs, files in os.walk(top):
                for name in dirs + files:
                    os.lchown(os.path.join(folder, name), self.uid, self.gid)

    def can_reach(self, path: str) -> str | None:
        """The first folder on the way to ``path`` the agent user may not pass, or None."""
        if not self.switch:
            return None
        parts = os.path.abspath(path).split(os.sep)
        for index in range(1, len(parts)):
            folder = os.sep.join(parts[:index]) or os.sep
            info = os.stat(folder)
            mode = info.st_mode
            allowed = (mode & 0o001 or (info.st_uid == self.uid and mode & 0o100)
                       or (info.st_gid == self.gid and mode & 0o010) or _acl_allows(folder, self.uid))
            if not allowed:
                return folder
        return None


def _acl_allows(folder: str, uid: int) -> bool:
    """Whether a POSIX ACL on ``folder`` grants ``uid`` search permission (bootstrap's way)."""
    try:
        raw = os.getxattr(folder, "system.posix_acl_access")
    except OSError:
        return False
    # struct posix_acl_xattr: u32 version, then entries of (u16 tag, u16 perm, u32 id); tag 2 = ACL_USER.
    mask_ok, user_ok = True, False
    for offset in range(4, len(raw) - 7, 8):
        tag = int.from_bytes(raw[offset:offset + 2], "little")
        perm = int.from_bytes(raw[offset + 2:offset + 4], "little")
        ident = int.from_bytes(raw[offset + 4:offset + 8], "little")
        if tag == 2 and ident == uid:
            user_ok = bool(perm & 1)
        elif tag == 0x10:  # ACL_MASK
            mask_ok = bool(perm & 1)
    return user_ok and mask_ok
