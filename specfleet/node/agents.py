# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""How each coding-agent CLI is run and read (node side; Python standard library only).

One *dialect* per CLI turns an executor's settings (model, endpoint, wire API, key variable,
retry bound) into that CLI's own mechanisms (flags, environment, a config file in the
agent's private HOME), and reads what the CLI printed: usage (model, tokens, cost), whether
a rate limit stopped it, and the error it reported. A definition without ``cli`` is
``custom``: its ``command`` runs as written and only the text patterns below read it.

The runner never runs an agent as root: :class:`AgentUser` is who it runs as.

The base and the helpers every dialect shares are in ``agent_dialect.py``, each CLI's dialect in
``agent_<cli>.py``, the agent user in ``agent_user.py``; this module is the registry.
Shipped to each node with the runner (``shipped.txt`` names every file).
"""
from __future__ import annotations

try:  # inside the controller's package
    from .agent_aider import Aider
    from .agent_claude import Claude
    from .agent_codex import Codex
    from .agent_dialect import DEFAULT_RATE_LIMIT_PATTERNS, ERROR_LINE, Dialect, json_lines, rate_limit_line
    from .agent_gemini import Gemini
    from .agent_opencode import Opencode
    from .agent_user import AgentUser
except ImportError:  # copied next to this file on a node
    from agent_aider import Aider  # type: ignore[no-redef]
    from agent_claude import Claude  # type: ignore[no-redef]
    from agent_codex import Codex  # type: ignore[no-redef]
    from agent_dialect import DEFAULT_RATE_LIMIT_PATTERNS, ERROR_LINE, Dialect, json_lines, rate_limit_line  # type: ignore[no-redef]
    from agent_gemini import Gemini  # type: ignore[no-redef]
    from agent_opencode import Opencode  # type: ignore[no-redef]
    from agent_user import AgentUser  # type: ignore[no-redef]

__all__ = ["DEFAULT_RATE_LIMIT_PATTERNS", "DIALECTS", "ERROR_LINE", "AgentUser", "Aider", "Claude", "Codex", "Dialect",
           "Gemini", "Opencode", "dialect", "json_lines", "rate_limit_line"]

DIALECTS: dict[str, Dialect] = {"custom": Dialect(), "claude": Claude(), "codex": Codex(), "opencode": Opencode(),
                                "gemini": Gemini(), "aider": Aider()}


def dialect(name: str | None) -> Dialect:
    return DIALECTS.get(name or "custom", DIALECTS["custom"])
