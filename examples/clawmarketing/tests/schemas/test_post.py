from datetime import datetime, timezone

import pytest

from backend.schemas.errors import ValidationError
from backend.schemas.post import (
    SCOPE_WRITE,
    TITLE_MAX_LENGTH,
    Post,
    PostCreate,
    format_datetime,
    parse_datetime,
)

VALID = {"title": "Launch", "content": "Big news", "platform": "linkedin"}


def test_post_create_from_dict_accepts_valid_body():
    data = PostCreate.from_dict(VALID)
    assert (data.title, data.content, data.platform) == ("Launch", "Big news", "linkedin")
    assert PostCreate.required_scope == SCOPE_WRITE


@pytest.mark.parametrize("missing", ["title", "content", "platform"])
def test_post_create_requires_every_field(missing):
    body = {k: v for k, v in VALID.items() if k != missing}
    with pytest.raises(ValidationError) as err:
        PostCreate.from_dict(body)
    assert err.value.field == missing


@pytest.mark.parametrize(
    "field, value",
    [("title", "   "), ("title", "x" * (TITLE_MAX_LENGTH + 1)), ("content", 42), ("platform", "myspace")],
)
def test_post_create_rejects_bad_values(field, value):
    with pytest.raises(ValidationError) as err:
        PostCreate.from_dict({**VALID, field: value})
    assert err.value.field == field


def test_post_create_rejects_unknown_fields_and_non_objects():
    with pytest.raises(ValidationError) as err:
        PostCreate.from_dict({**VALID, "author_id": 9})
    assert err.value.field == "author_id"
    with pytest.raises(ValidationError):
        PostCreate.from_dict(["not", "a", "dict"])


def test_post_validates_status_and_schedule_consistency():
    with pytest.raises(ValidationError) as err:
        Post(title="t", content="c", platform="twitter", status="archived")
    assert err.value.field == "status"
    with pytest.raises(ValidationError) as err:
        Post(title="t", content="c", platform="twitter", status="scheduled")
    assert err.value.field == "scheduled_at"


def test_post_to_dict_formats_datetimes_as_utc():
    created = datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    post = Post(title="t", content="c", platform="twitter", id=7, author_id=1, created_at=created)
    assert post.to_dict() == {
        "id": 7,
        "author_id": 1,
        "title": "t",
        "content": "c",
        "platform": "twitter",
        "status": "draft",
        "created_at": "2025-01-02T03:04:05Z",
        "scheduled_at": None,
    }


def test_parse_datetime_requires_timezone():
    assert parse_datetime("2025-06-01T10:00:00Z", "when") == datetime(2025, 6, 1, 10, tzinfo=timezone.utc)
    assert format_datetime(parse_datetime("2025-06-01T18:00:00+08:00", "when")) == "2025-06-01T10:00:00Z"
    for bad in ("2025-06-01T10:00:00", "tomorrow", 1717236000):
        with pytest.raises(ValidationError) as err:
            parse_datetime(bad, "when")
        assert err.value.field == "when"
