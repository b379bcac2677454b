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


def last_json(output: str) -> dict | None:
    """The last JSON object in ``output``: a whole-output document, else the last JSON line."""
    text = output.strip()
    start = text.find("{")
    if start >= 0:
        try:
            value = json.loads(text[start:])
            if isinstance(value, dict):
                return value
        except ValueError:
            pass
    lines = json_lines(output)
    return lines[-1] if lines else None


def usage(model: str | None = None, input_tokens: int | None = None, output_tokens: int | None = None,
          cost_usd: float | None = None) -> dict | None:
    if model is None and input_tokens is None and output_tokens is None and cost_usd is None:
        return None
    return {"model": model, "input_tokens": input_tokens, "output_tokens": output_tokens, "cost_usd": cost_usd}


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
        return {"usage": None, "rate_limited": False, "error": None}


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
    line = " ".join(str(text).split())
    return line[:limit]


class Claude(Dialect):
    __doc__ = CLAUDE_DOC

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

RATE_LIMIT = re.compile(r"\b429\b|too many requests|rate[ _-]?limit|quota exceeded|insufficient_quota"
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
        events = []
        for line in output.splitlines():
            line = line.strip()
            if line.startswith("{") and line.endswith("}"):
                try:
                    value = json.loads(line)
                except ValueError:
                    continue
                if isinstance(value, dict) and isinstance(value.get("type"), str):
                    events.append(value)

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
        rate_limited = bool(error and RATE_LIMIT.search(error)) or (
            (timed_out or rc != 0 or not completed) and bool(RATE_LIMIT.search(last_attempt)))

        usage = None
        if completed or tokens_in is not None or tokens_out is not None:
            usage = {"model": model, "input_tokens": tokens_in, "output_tokens": tokens_out, "cost_usd": None}
        return {"usage": usage, "rate_limited": rate_limited, "error": error}


DIALECTS: dict[str, Dialect] = {"custom": Dialect(), "claude": Claude(), "codex": Codex()}


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
