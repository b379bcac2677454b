# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One OpenAI-compatible chat-completions endpoint (MiniMax, GLM, OpenAI, a local vLLM or
Ollama), as the LLM review and the planning stage use it.

Configured in the inventory as a mapping (``base_url``, ``model``, ``api_key_var`` naming
the vault variable that holds the key, ``timeout``, ``retries``). The key is handed to the
client and nowhere else: never logged, stored or returned. The client library (``openai``)
does the HTTP and retries 429, 5xx and timeouts with exponential backoff (honouring
``Retry-After``).
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


class ChatUnavailable(Exception):
    """No usable answer: endpoint down, timeout, HTTP error after the retries, refusal, empty."""


@dataclass(frozen=True)
class Endpoint:
    base_url: str
    model: str
    api_key: str = field(repr=False)
    timeout: float = 120.0
    retries: int = 2

    @classmethod
    def from_vars(cls, value: Mapping[str, Any] | None, lookup: Callable[[str], Any],
                  name: str = "specfleet_review_endpoint") -> Endpoint | None:
        """From the inventory mapping ``name``; ``lookup(var)`` resolves the key's vault variable."""
        if not value:
            return None
        if not isinstance(value, Mapping):
            raise ValueError(f"{name} must be a mapping base_url, model, api_key_var (timeout, retries)")
        missing = [k for k in ("base_url", "model", "api_key_var") if not value.get(k)]
        if missing:
            raise ValueError(f"{name}: missing {', '.join(missing)}")
        var = str(value["api_key_var"])
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", var):  # never echoed: it may be the key itself
            raise ValueError(f"{name}: api_key_var must be the *name* of the variable holding the key "
                             "(e.g. vault_minimax_api_key), not a template or the key")
        key = lookup(var)
        if not key:
            raise ValueError(f"{name}: variable {var} (the API key) is not set")
        try:
            return cls(str(value["base_url"]), str(value["model"]), str(key), float(value.get("timeout", 120)),
                       int(value.get("retries", 2)))
        except (TypeError, ValueError):
            raise ValueError(f"{name}: timeout must be seconds and retries a whole number") from None


def ask(endpoint: Endpoint, messages: Sequence[Mapping[str, str]], temperature: float = 0.0) -> str:
    """The assistant's text for ``messages``; :class:`ChatUnavailable` when there is none."""
    try:
        import openai
    except ImportError as exc:  # pragma: no cover - requirements.txt installs it
        raise ChatUnavailable("the openai package is not installed (pip install -r requirements.txt)") from exc
    client = openai.OpenAI(base_url=endpoint.base_url, api_key=endpoint.api_key, timeout=endpoint.timeout,
                           max_retries=endpoint.retries)
    try:
        answer = client.chat.completions.create(model=endpoint.model, temperature=temperature,
                                                messages=[dict(m) for m in messages])
    except openai.APITimeoutError:
        raise ChatUnavailable(f"{endpoint.base_url}: no answer within {endpoint.timeout:g} s "
                              f"({endpoint.retries} retries)") from None
    except openai.APIConnectionError:
        raise ChatUnavailable(f"{endpoint.base_url}: cannot connect ({endpoint.retries} retries)") from None
    except openai.APIError as exc:
        status = getattr(exc, "status_code", None)
        raise ChatUnavailable(f"{endpoint.base_url}: {type(exc).__name__}" + (f" (HTTP {status})" if status else "")
                              + (f" after {endpoint.retries} retries" if status == 429 or (status or 0) >= 500
                                 else "")) from None
    finally:
        client.close()
    choice = answer.choices[0] if answer.choices else None
    if choice is None or choice.message is None:
        raise ChatUnavailable("the endpoint answered without a message")
    if getattr(choice.message, "refusal", None):
        raise ChatUnavailable(f"the model refused: {str(choice.message.refusal)[:200]}")
    text = choice.message.content or ""
    if not text.strip():
        raise ChatUnavailable("the model answered with nothing")
    return text
