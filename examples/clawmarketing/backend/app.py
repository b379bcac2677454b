"""A tiny dispatcher: route table (method, path) -> handler, plus handle()."""

from __future__ import annotations

import json
from typing import Any, Callable, Mapping
from urllib.parse import parse_qsl, urlsplit

from backend.http import Request
from backend.routers import posts
from backend.services.post_service import PostService

Handler = Callable[[Any, Request], "tuple[int, dict]"]

# Exact paths win over templates, so "/api/v1/posts/<literal>" can coexist with "{post_id}".
ROUTES: dict[tuple[str, str], Handler] = {
    ("POST", "/api/v1/posts"): posts.create_post,
    ("GET", "/api/v1/posts"): posts.list_posts,
    ("GET", "/api/v1/posts/{post_id}"): posts.get_post,
}


def _match_template(template: str, path: str) -> dict[str, str] | None:
    want, got = template.strip("/").split("/"), path.strip("/").split("/")
    if len(want) != len(got):
        return None
    params: dict[str, str] = {}
    for pattern, segment in zip(want, got):
        if pattern.startswith("{") and pattern.endswith("}"):
            params[pattern[1:-1]] = segment
        elif pattern != segment:
            return None
    return params


def match_route(routes: Mapping[tuple[str, str], Handler], method: str, path: str):
    """Return (handler, path_params), or (None, allowed_methods) when nothing matches."""
    if (method, path) in routes:
        return routes[(method, path)], {}
    allowed = set()
    for (route_method, template), handler in routes.items():
        params = _match_template(template, path)
        if params is None:
            continue
        if route_method == method:
            return handler, params
        allowed.add(route_method)
    return None, allowed


def _error(status: int, code: str, message: str) -> tuple[int, dict]:
    return status, {"error": {"code": code, "message": message}}


class App:
    def __init__(self, service: PostService | None = None, routes=None) -> None:
        self.service = service if service is not None else PostService()
        self.routes = ROUTES if routes is None else routes

    def handle(self, method: str, path: str, headers=None, body: Any = None) -> tuple[int, dict]:
        url = urlsplit(path)
        handler, extra = match_route(self.routes, method.upper(), url.path.rstrip("/") or "/")
        if handler is None:
            if extra:
                return _error(405, "method_not_allowed", f"allowed: {', '.join(sorted(extra))}")
            return _error(404, "not_found", f"no route for {method} {url.path}")
        if isinstance(body, (bytes, str)):
            try:
                body = json.loads(body) if body else None
            except ValueError:
                return _error(400, "invalid_json", "request body is not valid JSON")
        request = Request(
            method=method.upper(),
            path=url.path,
            headers=dict(headers or {}),
            path_params=extra,
            query=dict(parse_qsl(url.query)),
            service=self.service,
        )
        try:
            return handler(body, request)
        except Exception as exc:  # last line of defence: never leak a traceback
            return _error(500, "internal_error", type(exc).__name__)


app = App()


def handle(method: str, path: str, headers=None, body: Any = None) -> tuple[int, dict]:
    return app.handle(method, path, headers, body)
