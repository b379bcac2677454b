# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One executor of the attempt's chain as the controller shipped it, and what its runs spent."""
from __future__ import annotations

from dataclasses import dataclass, field

try:  # inside the controller's package
    from . import agents
    from .runfiles import tail
except ImportError:  # copied next to this file on a node
    import agents  # type: ignore[no-redef]
    from runfiles import tail  # type: ignore[no-redef]


@dataclass
class Executor:
    """One executor of the chain as the controller shipped it (see executors.runner_chain)."""
    name: str
    kind: str = "cli"                         # cli | replay
    cli: str = "custom"                       # the dialect: claude, codex, opencode, gemini, aider, custom
    command: list = field(default_factory=list)
    prompt: str = "stdin"                     # stdin | argument | file (custom executors)
    model: str | None = None
    base_url: str | None = None
    api: str | None = None
    key_env: str | None = None
    max_retries: int = 2
    args: list = field(default_factory=list)
    env: dict = field(default_factory=dict)
    secret_env: list = field(default_factory=list)
    rate_limit_patterns: list = field(default_factory=list)
    rate_limit_grace_s: float = 45.0          # a run still going this long after a rate-limit line is stopped
    backoff_s: float = 30.0
    timeout_s: int = 3600
    prices: dict = field(default_factory=dict)  # USD per million tokens: {"input": x, "output": y}

    @classmethod
    def from_dict(cls, data: dict) -> Executor:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)

    @property
    def dialect(self) -> agents.Dialect:
        return agents.dialect(self.cli)

    @property
    def settings(self) -> dict:
        return {"cli": self.cli, "model": self.model, "base_url": self.base_url, "api": self.api,
                "key_env": self.key_env, "max_retries": self.max_retries, "args": list(self.args),
                "command": list(self.command), "prompt": self.prompt}

    @property
    def prompt_mode(self) -> str:
        return self.prompt if self.cli == "custom" else self.dialect.prompt

    def argv(self, prompt_text: str, prompt_file: str) -> list[str]:
        """The command with the prompt placed as the CLI documents it."""
        return self.dialect.argv(self.settings, prompt_text, prompt_file)

    def rate_limit_line(self, output: str) -> str | None:
        return agents.rate_limit_line(output, self.rate_limit_patterns)

    def read(self, output: str, rc: int, timed_out: bool) -> dict:
        """What the CLI said: usage (cost from the inventory's prices when the CLI gives none), rate limit, error."""
        try:
            said = self.dialect.read(output, rc, timed_out)
        except Exception as exc:  # a CLI changed its output: say so, never lose the round over it
            said = {"usage": None, "rate_limited": False, "error": f"could not read {self.cli}'s output: {exc!r}"}
        # A dialect reads its CLI's structured output; a custom CLI's evidence is its error lines,
        # and only when it failed: one that ended well has no rate limit, whatever its log says.
        if self.cli == "custom" and not said.get("rate_limited") and (rc != 0 or timed_out):
            line = self.rate_limit_line(tail(output, 80, 32768))
            if line:
                said.update(rate_limited=True, error=said.get("error") or line)
        spent = said.get("usage") or None
        if spent is not None:
            spent = dict(spent)
            spent.setdefault("model", self.model)
            if spent.get("model") is None:
                spent["model"] = self.model
            if spent.get("cost_usd") is None and self.prices and spent.get("input_tokens") is not None:
                spent["cost_usd"] = round(
                    (float(spent.get("input_tokens") or 0) * float(self.prices.get("input", 0))
                     + float(spent.get("output_tokens") or 0) * float(self.prices.get("output", 0))) / 1e6, 6)
            spent["cost_source"] = "cli" if (said.get("usage") or {}).get("cost_usd") is not None else (
                "prices" if spent.get("cost_usd") is not None else None)
        said["usage"] = spent
        return said


def sum_usage(rounds: list[dict]) -> dict:
    """Tokens and cost of every agent try of the attempt, with the models that answered."""
    total: dict = {"input_tokens": 0, "output_tokens": 0, "cost_usd": None, "models": []}
    for record in rounds:
        for attempt_try in record.get("tries") or []:
            spent = attempt_try.get("usage") or {}
            for key in ("input_tokens", "output_tokens"):
                total[key] += int(spent.get(key) or 0)
            if spent.get("cost_usd") is not None:
                total["cost_usd"] = round((total["cost_usd"] or 0.0) + float(spent["cost_usd"]), 6)
            if spent.get("model") and spent["model"] not in total["models"]:
                total["models"].append(spent["model"])
    return total

