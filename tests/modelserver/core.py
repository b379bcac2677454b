"""A scripted model server on loopback that speaks the providers' real HTTP APIs.

Real agent CLIs (Claude Code, Codex, OpenCode, Gemini CLI, aider) are pointed at it
instead of a paid model. Each API has its own module (``anthropic``, ``openai_chat``,
``openai_responses``, ``gemini``) that turns a request into a :class:`Turn` (what the
conversation holds so far), asks the server's script what to do, and writes the answer in
that API's own wire format (JSON or server-sent events, tool calls included).

The script is a :class:`Plan` per task: the files the "model" writes (through whichever
write or shell tool the CLI offers), the final text, the token usage it reports, or a
rate limit (HTTP 429 with ``Retry-After``). A plan is chosen by a key found in the
request's text (the task id in specfleet's prompt); ``default`` serves the rest.

Every request is kept in :attr:`ModelServer.requests` (API, path, headers, body) so a
test can check which model was asked for and that nothing else was called.
"""
from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any


@dataclass
class Plan:
    """What the scripted model does for one task."""
    # path relative to the workspace -> new content; or a function of the workspace folder that
    # returns them (e.g. a recorded patch applied to what the workspace holds now)
    edits: dict[str, str] | Callable[[str], dict[str, str]] = field(default_factory=dict)
    reply: str = "Done: the change is made."
    rate_limit: bool = False                               # every request of this task gets a 429
    input_tokens: int = 1200
    output_tokens: int = 300


@dataclass
class Turn:
    """One request, reduced to what the script needs (each API module fills it in)."""
    api: str                       # anthropic | openai_chat | openai_responses | gemini
    model: str
    text: str                      # every piece of text in the request (system, messages, tool results)
    tools: list[str]               # names of the tools the CLI offers
    tool_results: int              # how many tool results the conversation already holds
    stream: bool
    workspace: str | None = None   # the working directory, when the request says it


class ModelServer:
    """``with ModelServer(plans) as server: ... server.url ...``; one thread per connection."""

    def __init__(self, plans: dict[str, Plan] | None = None, default: Plan | None = None, retry_after: int = 1):
        self.plans = dict(plans or {})
        self.default = default or Plan()
        self.retry_after = retry_after
        self.requests: list[dict] = []
        self.errors: list[str] = []      # tracebacks of requests the script failed to answer
        self.lock = threading.Lock()
        self.routes: list[tuple[Callable[[str, str], bool], Callable]] = []
        from . import anthropic, gemini, openai_chat, openai_responses  # each registers its routes
        for module in (anthropic, openai_chat, openai_responses, gemini):
            module.register(self)
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                server.dispatch(self, "GET", None)

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {"_raw": raw.decode("utf-8", "replace")}
                server.dispatch(self, "POST", body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    # -- routing and the script ---------------------------------------------------------

    def route(self, matches: Callable[[str, str], bool], handler: Callable) -> None:
        """``matches(method, path)``; ``handler(server, request_handler, method, path, body)``."""
        self.routes.append((matches, handler))

    def dispatch(self, handler: http.server.BaseHTTPRequestHandler, method: str, body: Any) -> None:
        path = handler.path
        with self.lock:
            self.requests.append({"method": method, "path": path, "headers": dict(handler.headers.items()),
                                  "body": body})
        for matches, serve in self.routes:
            if matches(method, path.split("?", 1)[0]):
                try:
                    serve(self, handler, method, path, body)
                except Exception:  # the script broke: say so (a test checks errors), never drop the line
                    import traceback
                    self.errors.append(traceback.format_exc())
                    send_json(handler, 500, {"error": {"message": "the scripted model server failed: "
                                                                 + self.errors[-1].strip().splitlines()[-1]}})
                return
        send_json(handler, 404, {"error": {"message": f"the scripted model server has no {method} {path}"}})

    def plan_for(self, text: str) -> Plan:
        for key, plan in self.plans.items():
            if key in text:
                return plan
        return self.default

    def decide(self, turn: Turn) -> tuple[str, Any]:
        """What to answer: ``("rate_limit", None)``, ``("edit", plan)`` or ``("text", reply)``."""
        plan = self.plan_for(turn.text)
        if plan.rate_limit:
            return "rate_limit", None
        if turn.tools and plan.edits and turn.tool_results == 0:
            return "edit", self.resolved(plan, turn.workspace)
        return "text", plan.reply

    @staticmethod
    def resolved(plan: Plan, workspace: str | None) -> Plan:
        """``plan`` with its edits as a mapping (a function of the workspace is called now)."""
        if callable(plan.edits):
            return replace(plan, edits=plan.edits(workspace or ""))
        return plan

    # -- life ---------------------------------------------------------------------------

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()

    def __enter__(self) -> ModelServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# -- wire helpers shared by the API modules ---------------------------------------------

def send_json(handler: http.server.BaseHTTPRequestHandler, status: int, data: Any,
              headers: dict[str, str] | None = None) -> None:
    raw = json.dumps(data).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(raw)))
    for key, value in (headers or {}).items():
        handler.send_header(key, value)
    handler.end_headers()
    handler.wfile.write(raw)


def send_events(handler: http.server.BaseHTTPRequestHandler, events: list[tuple[str | None, Any]]) -> None:
    """Server-sent events: ``(event name or None, data)``; data dicts are JSON, ``"[DONE]"`` is sent as is."""
    chunks = []
    for name, data in events:
        text = data if isinstance(data, str) else json.dumps(data)
        chunks.append((f"event: {name}\n" if name else "") + f"data: {text}\n\n")
    raw = "".join(chunks).encode()
    handler.send_response(200)
    handler.send_header("Content-Type", "text/event-stream")
    handler.send_header("Cache-Control", "no-cache")
    handler.send_header("Content-Length", str(len(raw)))
    handler.end_headers()
    handler.wfile.write(raw)


def send_rate_limit(server: ModelServer, handler: http.server.BaseHTTPRequestHandler, body: Any) -> None:
    """HTTP 429 with Retry-After, the body in the API's own error shape (``body``)."""
    send_json(handler, 429, body, {"Retry-After": str(server.retry_after)})


def all_text(value: Any) -> str:
    """Every string inside a JSON value, joined (for plan keys and the working directory)."""
    out: list[str] = []

    def walk(item: Any) -> None:
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, dict):
            for sub in item.values():
                walk(sub)
        elif isinstance(item, list):
            for sub in item:
                walk(sub)

    walk(value)
    return "\n".join(out)
