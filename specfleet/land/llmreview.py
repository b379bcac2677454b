# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The optional LLM review of a branch at verify: an OpenAI-compatible chat endpoint
(MiniMax, GLM, OpenAI, a local vLLM or Ollama) reads the spec's acceptance criteria and
do-not-do list and the diff, and answers with a verdict and its reasons.

Configured in the inventory (``specfleet_review_endpoint``: ``base_url``, ``model``,
``api_key_var`` naming the vault variable that holds the key, ``timeout``, ``retries``)
and switched on per project (``review: advisory`` or ``required`` in project.yml). The
key is handed to the client and nowhere else: not logged, not stored, not in the verdict.
The endpoint and its client are :mod:`chat`'s.
"""
from __future__ import annotations

import json
import re

from specfleet.plan.chat import ChatUnavailable, Endpoint, ask

__all__ = ["Endpoint", "ReviewUnavailable", "parse_verdict", "review"]

DIFF_LIMIT = 60000
SYSTEM = (
    "You review one change made by a coding agent for one spec. Judge only against the spec: every acceptance "
    "criterion met, nothing on the do-not-do list done, no placeholder or unfinished code, no unrelated change. "
    'Answer with one JSON object and nothing else: {"verdict": "approve" or "reject", "reasons": ["..."]}.'
)


ReviewUnavailable = ChatUnavailable  # the review's name for "no usable verdict"


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
    text = ask(endpoint, [{"role": "system", "content": SYSTEM}, {"role": "user", "content": _message(spec_text, diff)}])
    verdict = parse_verdict(text)
    summary = f"{verdict['verdict']} by {endpoint.model}" + (f": {'; '.join(verdict['reasons'])}"
                                                             if verdict["reasons"] else "")
    return dict(verdict, model=endpoint.model, summary=summary[:1500])
