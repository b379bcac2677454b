"""Reading what each CLI printed: a rate limit only from the CLI's own reports, never from the
conversation it streams (an agent working on a rate limiter prints "429" in its tool results)."""
from __future__ import annotations

import json

import pytest

from specfleet.node import runner

TOOL_RESULT_429 = json.dumps({"type": "user", "message": {"content": [{
    "type": "tool_result", "is_error": True,
    "content": "FAILED tests/test_limits.py::test_burst - AssertionError: error: expected status 429"}]}})
CLAUDE_OK = json.dumps({"type": "result", "subtype": "success", "is_error": False, "result": "Done.",
                        "modelUsage": {"glm-4.6": {"inputTokens": 900, "outputTokens": 120}}})
CLAUDE_RETRY = json.dumps({"type": "system", "subtype": "api_retry", "attempt": 1, "error_status": 429,
                           "error": "rate_limit"})
CODEX_RETRY = json.dumps({"type": "error", "message": "Reconnecting... 1/2 (unexpected status 429 Too Many Requests)"})
OPENCODE_RETRY = ('timestamp=2026-12-07T22:55:06.492Z level=ERROR run=45cb91dc message="stream error" '
                  'providerID=specfleet modelID=deepseek-chat small=false agent=build mode=primary '
                  'error.error="AI_APICallError: Rate limit reached for requests. Please try again in 1s."')
OPENCODE_TOOL_OUTPUT = json.dumps({"type": "tool_use", "part": {"state": {"output": "error: expected status 429"}}})
CODEX_OK = json.dumps({"type": "turn.completed", "usage": {"input_tokens": 700, "output_tokens": 90}})


@pytest.mark.parametrize("cli,output,rc,limited", [
    ("claude", f"{TOOL_RESULT_429}\n{CLAUDE_OK}", 0, False),      # a test printing 429 in the conversation
    ("claude", f"{CLAUDE_RETRY}\n{CLAUDE_OK}", 0, False),         # retried past a 429 and finished
    ("codex", f"{TOOL_RESULT_429}\n{CODEX_OK}", 0, False),
    ("custom", "error: HTTP 429 Too Many Requests", 0, False),     # a custom CLI that ended well
    ("custom", "error: HTTP 429 Too Many Requests", 1, True),
])
def test_a_rate_limit_is_the_clis_own_report_of_one(cli, output, rc, limited):
    said = runner.Executor("x", cli=cli, model="m").read(output, rc, False)
    assert said["rate_limited"] is limited, said


@pytest.mark.parametrize("cli,text,retrying", [
    ("claude", CLAUDE_RETRY, True),
    ("claude", TOOL_RESULT_429, False),
    ("codex", CODEX_RETRY, True),
    ("codex", TOOL_RESULT_429, False),
    ("custom", "Error: 429 Too Many Requests, retrying in 30 s", True),
    ("opencode", OPENCODE_RETRY, True),
    ("opencode", OPENCODE_TOOL_OUTPUT, False),
    ("gemini", "[API Error: status 429 RESOURCE_EXHAUSTED]", False),   # bounded by its maxAttempts instead
])
def test_only_the_clis_own_retry_reports_start_the_rate_limit_grace(cli, text, retrying):
    assert bool(runner.Executor("x", cli=cli, model="m").dialect.retrying(text)) is retrying


def test_usage_takes_the_model_the_cli_reports_and_prices_the_tokens_when_the_cli_gives_no_cost():
    said = runner.Executor("glm", cli="claude", model="glm-4.6", prices={"input": 0.6, "output": 2.2}).read(
        CLAUDE_OK, 0, False)
    assert said["usage"]["model"] == "glm-4.6" and said["usage"]["input_tokens"] == 900
    assert said["usage"]["cost_usd"] == pytest.approx((900 * 0.6 + 120 * 2.2) / 1e6)
    assert said["usage"]["cost_source"] == "prices"
