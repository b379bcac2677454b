# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``aider`` dialect: aider with a wrapper that reports its requests (see :data:`AIDER_DOC`)."""
from __future__ import annotations

import json
import os
import re
import shutil

try:  # inside the controller's package
    from .agent_dialect import Dialect
except ImportError:  # copied next to this file on a node
    from agent_dialect import Dialect  # type: ignore[no-redef]

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
        return [python, "-c", self._wrapper(settings, api)] + args

    def _wrapper(self, settings: dict, api: str) -> str:
        """The Python that runs aider: the key variable, the retry bound, usage and failure reports."""
        key_var = "OPENAI_API_KEY" if api == "openai" else "ANTHROPIC_API_KEY"
        retry_timeout = 0.125 * 2 ** self._retries(settings)
        return (
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
