"""Request/response schemas."""

from backend.schemas.errors import ValidationError
from backend.schemas.post import (
    PLATFORMS,
    POST_STATUSES,
    SCOPE_READ,
    SCOPE_WRITE,
    Post,
    PostBase,
    PostCreate,
    format_datetime,
    parse_datetime,
)

__all__ = [
    "PLATFORMS",
    "POST_STATUSES",
    "SCOPE_READ",
    "SCOPE_WRITE",
    "Post",
    "PostBase",
    "PostCreate",
    "ValidationError",
    "format_datetime",
    "parse_datetime",
]
