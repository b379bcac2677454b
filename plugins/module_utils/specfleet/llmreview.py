# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The optional LLM review of a branch at verify: an OpenAI-compatible chat endpoint
(MiniMax, GLM, OpenAI, a local vLLM or Ollama) reads the spec's acceptance criteria and
do-not-do list and the diff, and answers with a verdict and its reasons.

Configured in the inventory (``specfleet_review_endpoint``: ``base_url``, ``model``,
``api_key_var`` naming the vault variable that holds the key, ``timeout``, ``retries``)
and switched on per project (``review: advisory`` or ``required`` in project.yml). The
key is handed to the client and nowhere else: not logged, not stored, not in the verdict.
The client library (``openai``) does the HTTP, retries 429/5xx/timeouts with backoff.
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

DIFF_LIMIT = 60000
SYSTEM = (
    "You review one change made by a coding agent for one spec. Judge only against the spec: every acceptance "
    "criterion met, nothing on the do-not-do list done, no placeholder or unfinished code, no unrelated change. "
    'Answer with one JSON object and nothing else: {"verdict": "approve" or "reject", "reasons": ["..."]}.'
)


class ReviewUnavailable(Exception):
    """The endpoint could not give a usable verdict (down, timeout, refusal, not JSON)."""


@dataclass(frozen=True)
class Endpoint:
    base_url: str
    model: str
    api_key: str
    timeout: float = 120.0
    retries: int = 2

    @classmethod
    def from_vars(cls, value: Mapping[str, Any] | None, lookup) -> Endpoint | None:
        """From ``specfleet_review_endpoint``; ``lookup(name)`` resolves the key's vault variable."""
        if not value:
            return None
        missing = [k for k in ("base_url", "model", "api_key_var") if not value.get(k)]
        if missing:
            raise ValueError(f"specfleet_review_endpoint: missing {', '.join(missing)}")
        key = lookup(str(value["api_key_var"]))
        if not key:
            raise ValueError(f"specfleet_review_endpoint: variable {value['api_key_var']} (the API key) is not set")
        return cls(str(value["base_url"]), str(value["model"]), str(key), float(value.get("timeout", 120)),
                   int(value.get("retries", 2)))


def _message(spec_text: str, diff: str) -> str:
    if len(diff) > DIFF_LIMIT:
        diff = diff[:DIFF_LIMIT] + f"\n[diff cut at {DIFF_LIMIT} characters]"
    return f"# The spec\n\n{spec_text.strip()}\n\n# The change (git diff)\n\n```diff\n{diff}\n```\n"


def parse_verdict(text: str) -> dict:
    """The model's answer -> ``{"ok", "verdict", "reasons"}``; :class:`ReviewUnavailable` if unusable."""
    match = re.search(r"\{.*\}", text or "", re.S)
    if not match:
        raise ReviewUnavailable(f"the answer is not JSON: {(text or '').strip()[:200]!r}")
    try:
        data = json.loads(match.group(0))
    except ValueError as exc:
        raise ReviewUnavailable(f"the answer is not valid JSON ({exc}): {match.group(0)[:200]!r}") from None
    verdict = str(data.get("verdict", "")).lower()
    if verdict not in ("approve", "reject"):
        raise ReviewUnavailable(f"the answer has no verdict approve/reject: {match.group(0)[:200]!r}")
    reasons = [str(r)[:500] for r in data.get("reasons") or []][:20]
    return {"ok": verdict == "approve", "verdict": verdict, "reasons": reasons}


def review(endpoint: Endpoint, spec_text: str, diff: str) -> dict:
    """Ask the endpoint; -> ``{"ok", "verdict", "reasons", "model", "summary"}``."""
    try:
        import openai
    except ImportError as exc:  # pragma: no cover - requirements.txt installs it
        raise ReviewUnavailable("the openai package is not installed (pip install -r requirements.txt)") from exc
    client = openai.OpenAI(base_url=endpoint.base_url, api_key=endpoint.api_key, timeout=endpoint.timeout,
                           max_retries=endpoint.retries)
    try:
        answer = client.chat.completions.create(
            model=endpoint.model, temperature=0,
            messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": _message(spec_text, diff)}])
    except openai.APIError as exc:
        status = getattr(exc, "status_code", None)
        raise ReviewUnavailable(f"{endpoint.base_url}: {type(exc).__name__}" + (f" (HTTP {status})" if status else "")
                                ) from None
    finally:
        client.close()
    choice = answer.choices[0] if answer.choices else None
    if choice is None or choice.message is None:
        raise ReviewUnavailable("the endpoint answered without a message")
    if getattr(choice.message, "refusal", None):
        raise ReviewUnavailable(f"the model refused: {str(choice.message.refusal)[:200]}")
    verdict = parse_verdict(choice.message.content or "")
    summary = f"{verdict['verdict']} by {endpoint.model}" + (f": {'; '.join(verdict['reasons'])}"
                                                             if verdict["reasons"] else "")
    return dict(verdict, model=endpoint.model, summary=summary[:1500])
