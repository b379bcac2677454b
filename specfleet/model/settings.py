# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where specfleet keeps its state on the controller: outside any git tree, one variable to move it."""
from __future__ import annotations

import os
import re
from pathlib import Path

_VARIABLE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


def specfleet_home(env: dict[str, str] | None = None) -> Path:
    """``$SPECFLEET_HOME``, default ``~/.local/state/specfleet`` (XDG state directory)."""
    env = os.environ if env is None else env
    value = env.get("SPECFLEET_HOME") or "~/.local/state/specfleet"
    return Path(value).expanduser()


def default_db_path(env: dict[str, str] | None = None) -> Path:
    """``$SPECFLEET_DB``, default ``$SPECFLEET_HOME/state.db``."""
    env = os.environ if env is None else env
    if env.get("SPECFLEET_DB"):
        return Path(env["SPECFLEET_DB"]).expanduser()
    return specfleet_home(env) / "state.db"


def expand_path(value: str, env: dict[str, str] | None = None) -> str:
    """Expand ``~`` and ``$VAR``/``${VAR}`` in a configured path, once, at load time.

    ``SPECFLEET_HOME`` is always defined (with its default). An undefined variable is an
    error rather than being left in the path, where it would create a directory literally
    named ``$HOME`` (the original's literal ``~`` directory, in another form).
    """
    env = dict(os.environ if env is None else env)
    env.setdefault("SPECFLEET_HOME", str(specfleet_home(env)))

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in env:
            raise ValueError(f"uses ${{{name}}}, which is not set in the environment")
        return env[name]

    return os.path.expanduser(_VARIABLE.sub(substitute, value))
