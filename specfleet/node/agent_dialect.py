# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The dialects' base: the ``custom`` dialect, and how any CLI's output is read for rate limits and JSON.

A dialect turns an executor's settings into one CLI's own mechanisms and reads what the CLI
printed (see :mod:`agents`); the reading helpers every dialect shares live here.
"""
from __future__ import annotations

import json
import re

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



def one_line(text: str, limit: int = 300) -> str:
    """``text`` on one line, terminal colour codes dropped, cut at ``limit``."""
    return " ".join(re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", str(text)).split())[:limit]

