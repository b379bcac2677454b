"""Handlers for /api/v1/posts. Each takes (body, request) and returns (status, dict)."""

from __future__ import annotations

import functools
from typing import Any, Callable

from backend.auth import AuthError, User, require_scope, require_user
from backend.http import Request
from backend.schemas.errors import ValidationError
from backend.schemas.post import SCOPE_READ, PostCreate
from backend.services.post_service import PostNotFoundError


def _error_response(exc: Exception) -> tuple[int, dict] | None:
    """Map a known exception to an error response; None means "not ours, re-raise"."""
    if isinstance(exc, ValidationError):
        return 400, {"error": exc.to_dict()}
    if isinstance(exc, AuthError):
        code = "unauthorized" if exc.status == 401 else "forbidden"
        return exc.status, {"error": {"code": code, "message": exc.message}}
    if isinstance(exc, PostNotFoundError):
        return 404, {"error": {"code": "not_found", "message": str(exc), "post_id": exc.post_id}}
    return None


def handles_errors(func: Callable[[Any, Request], tuple[int, dict]]):
    @functools.wraps(func)
    def wrapper(body: Any, request: Request) -> tuple[int, dict]:
        try:
            return func(body, request)
        except Exception as exc:
            response = _error_response(exc)
            if response is None:
                raise
            return response

    return wrapper


def _authenticate(request: Request, scope: str) -> User:
    return require_scope(require_user(request.headers), scope)


def _parse_post_id(value: Any) -> int:
    text = str(value) if value is not None else ""
    if not text.isdigit() or int(text) < 1:
        raise ValidationError("post_id must be a positive integer", "post_id")
    return int(text)


@handles_errors
def create_post(body: Any, request: Request) -> tuple[int, dict]:
    user = _authenticate(request, PostCreate.required_scope)
    data = PostCreate.from_dict(body)
    post = request.service.create(data, author_id=user.id)
    return 201, post.to_dict()


@handles_errors
def get_post(body: Any, request: Request) -> tuple[int, dict]:
    _authenticate(request, SCOPE_READ)
    post = request.service.get(_parse_post_id(request.path_params.get("post_id")))
    return 200, post.to_dict()


@handles_errors
def list_posts(body: Any, request: Request) -> tuple[int, dict]:
    user = _authenticate(request, SCOPE_READ)
    author_id = user.id if request.query.get("mine") == "true" else None
    posts = request.service.list(author_id=author_id, status=request.query.get("status"))
    return 200, {"items": [post.to_dict() for post in posts], "count": len(posts)}
