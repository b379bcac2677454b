"""A real OpenAI-compatible chat-completions server on loopback that replays scripted answers.

Each scripted answer is ``(status, body)``: a dict is sent as JSON, a string becomes an
error body; status ``"slow"`` waits ``body`` seconds before answering 200 with the next
answer (a client timeout); 429 answers carry ``Retry-After: 0``. Every request is kept
(path, Authorization header, JSON body) for the test to inspect.
"""
from __future__ import annotations

import json
import time

import pytest


class ChatServer:
    """An OpenAI-compatible /v1/chat/completions endpoint that replays scripted answers."""

    def __init__(self, answers: list[tuple[int, dict | str]]):
        import http.server
        import threading

        self.answers, self.requests = list(answers), []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
                status, answer = server.answers.pop(0) if server.answers else (500, "script exhausted")
                if status == "slow":
                    time.sleep(answer)
                    return  # no answer at all: the client times out and retries
                if isinstance(answer, str):
                    answer = {"error": {"message": answer, "type": "test"}}
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if status == 429:
                    self.send_header("Retry-After", "0")
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


def completion(content: str) -> tuple[int, dict]:
    return 200, {"id": "c1", "object": "chat.completion", "created": 1, "model": "m",
                 "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
                 "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


@pytest.fixture
def chat():
    servers = []

    def start(*answers):
        servers.append(ChatServer(list(answers)))
        return servers[-1]

    yield start
    for server in servers:
        server.close()
