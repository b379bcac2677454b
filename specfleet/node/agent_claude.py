# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``claude`` dialect: Claude Code in print mode (see :data:`CLAUDE_DOC`)."""
from __future__ import annotations

import json
import os

try:  # inside the controller's package
    from .agent_dialect import Dialect, json_lines, one_line
except ImportError:  # copied next to this file on a node
    from agent_dialect import Dialect, json_lines, one_line  # type: ignore[no-redef]

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
            error = one_line(result.get("result") or ", ".join(result.get("errors") or [])
                              or result.get("terminal_reason") or result.get("subtype") or "error")
        if error is None and timed_out:
            error = "timed out"
        if error is None and (rc != 0 or result is None):
            tail = next((p for p in reversed(plain) if not p.startswith("[claude-code:")), None)
            error = one_line(tail or f"exit status {rc}, no result")
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
