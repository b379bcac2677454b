"""Bearer-token authentication against an in-memory token table."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping


class AuthError(Exception):
    """401 when the caller is unknown, 403 when it lacks a scope."""

    def __init__(self, message: str, status: int = 401, scope: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.scope = scope


@dataclass(frozen=True)
class User:
    id: int
    username: str
    scopes: frozenset = field(default_factory=frozenset)


TOKENS: dict[str, User] = {
    "alice-token": User(1, "alice", frozenset({"posts:read", "posts:write", "posts:schedule"})),
    "bob-token": User(2, "bob", frozenset({"posts:read", "posts:write"})),
    "viewer-token": User(3, "viewer", frozenset({"posts:read"})),
}


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value
    return None


def require_user(headers: Mapping[str, str], tokens: Mapping[str, User] | None = None) -> User:
    """Return the user for `Authorization: Bearer <token>` or raise AuthError (401)."""
    table = TOKENS if tokens is None else tokens
    value = _header(headers or {}, "Authorization")
    if not value:
        raise AuthError("missing Authorization header")
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("Authorization header must be 'Bearer <token>'")
    user = table.get(token.strip())
    if user is None:
        raise AuthError("invalid token")
    return user


def require_scope(user: User, scope: str) -> User:
    """Raise AuthError (403) unless `user` holds `scope`."""
    if scope not in user.scopes:
        raise AuthError(f"missing scope {scope}", status=403, scope=scope)
    return user
