"""Shared fixtures. Every test gets a fresh service with a frozen clock."""

import os
import sys
from datetime import datetime, timedelta, timezone

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from backend.app import App  # noqa: E402
from backend.http import Request  # noqa: E402
from backend.schemas.post import PostCreate  # noqa: E402
from backend.services.post_service import PostService  # noqa: E402

NOW = datetime(2025, 6, 1, 9, 0, tzinfo=timezone.utc)
ALICE = {"Authorization": "Bearer alice-token"}  # user 1: read, write, schedule
BOB = {"Authorization": "Bearer bob-token"}  # user 2: read, write
VIEWER = {"Authorization": "Bearer viewer-token"}  # user 3: read only


@pytest.fixture
def now():
    return NOW


@pytest.fixture
def service():
    return PostService(clock=lambda: NOW)


@pytest.fixture
def app(service):
    return App(service=service)


@pytest.fixture
def make_post(service):
    """make_post(author_id=1, **fields) -> Post stored in `service`."""

    def _make(author_id=1, title="Launch day", content="We ship today!", platform="twitter"):
        return service.create(PostCreate(title=title, content=content, platform=platform), author_id)

    return _make


@pytest.fixture
def make_request(service):
    """make_request(headers, path_params=None, query=None) -> Request bound to `service`."""

    def _make(headers=None, path_params=None, query=None, method="GET", path="/"):
        return Request(
            method=method,
            path=path,
            headers=headers or {},
            path_params=path_params or {},
            query=query or {},
            service=service,
        )

    return _make


@pytest.fixture
def later():
    """later(hours) -> an aware datetime `hours` after the frozen NOW."""
    return lambda hours=1: NOW + timedelta(hours=hours)
