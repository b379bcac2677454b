"""Post schemas: plain dataclasses that validate themselves on construction."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, ClassVar

from backend.schemas.errors import ValidationError

PLATFORMS = ("twitter", "linkedin", "facebook", "instagram")
POST_STATUSES = ("draft", "scheduled", "published", "failed")
TITLE_MAX_LENGTH = 200
CONTENT_MAX_LENGTH = 5000

# Auth scopes. Every request schema declares the scope its endpoint needs in
# `required_scope`; routers authenticate with `Schema.required_scope`.
SCOPE_READ = "posts:read"
SCOPE_WRITE = "posts:write"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def parse_datetime(value: Any, field_name: str) -> datetime:
    """Parse an ISO 8601 string that carries a timezone ("Z" or "+08:00")."""
    if not isinstance(value, str):
        raise ValidationError("must be an ISO 8601 datetime string", field_name)
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValidationError(f"invalid ISO 8601 datetime: {value!r}", field_name) from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise ValidationError("datetime must include a timezone", field_name)
    return parsed


def format_datetime(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def _require_str(value: Any, field_name: str, max_length: int) -> str:
    if not isinstance(value, str):
        raise ValidationError("must be a string", field_name)
    if not value.strip():
        raise ValidationError("must not be empty", field_name)
    if len(value) > max_length:
        raise ValidationError(f"must be at most {max_length} characters", field_name)
    return value


def validate_platform(value: Any, field_name: str = "platform") -> str:
    if value not in PLATFORMS:
        raise ValidationError(f"must be one of {', '.join(PLATFORMS)}", field_name)
    return value


@dataclass
class PostBase:
    title: str
    content: str
    platform: str

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        _require_str(self.title, "title", TITLE_MAX_LENGTH)
        _require_str(self.content, "content", CONTENT_MAX_LENGTH)
        validate_platform(self.platform)


@dataclass
class PostCreate(PostBase):
    """Body of POST /api/v1/posts."""

    required_scope: ClassVar[str] = SCOPE_WRITE
    FIELDS: ClassVar[tuple[str, ...]] = ("title", "content", "platform")

    @classmethod
    def from_dict(cls, data: Any) -> PostCreate:
        if not isinstance(data, dict):
            raise ValidationError("request body must be a JSON object")
        unknown = sorted(set(data) - set(cls.FIELDS))
        if unknown:
            raise ValidationError(f"unknown field: {unknown[0]}", unknown[0])
        for name in cls.FIELDS:
            if name not in data:
                raise ValidationError("field is required", name)
        return cls(title=data["title"], content=data["content"], platform=data["platform"])


@dataclass
class Post(PostBase):
    """A stored post. Build changed copies with dataclasses.replace() so they re-validate."""

    id: int = 0
    author_id: int = 0
    status: str = "draft"
    created_at: datetime = field(default_factory=utcnow)
    scheduled_at: datetime | None = None

    def validate(self) -> None:
        super().validate()
        if self.status not in POST_STATUSES:
            raise ValidationError(f"must be one of {', '.join(POST_STATUSES)}", "status")
        if self.scheduled_at is not None and self.scheduled_at.tzinfo is None:
            raise ValidationError("datetime must include a timezone", "scheduled_at")
        if self.status == "scheduled" and self.scheduled_at is None:
            raise ValidationError("a scheduled post needs scheduled_at", "scheduled_at")

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "author_id": self.author_id,
            "title": self.title,
            "content": self.content,
            "platform": self.platform,
            "status": self.status,
            "created_at": format_datetime(self.created_at),
            "scheduled_at": format_datetime(self.scheduled_at),
        }
