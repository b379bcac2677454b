"""PostService: create, read, update and schedule posts (in-memory storage)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Callable

from backend.schemas.errors import ValidationError
from backend.schemas.post import POST_STATUSES, Post, PostCreate, utcnow, validate_platform

# Statuses from which a post may (re)enter "scheduled".
SCHEDULABLE_STATUSES = ("draft", "scheduled")


class PostNotFoundError(LookupError):
    """No post with this id. Routers turn it into HTTP 404."""

    def __init__(self, post_id: int) -> None:
        super().__init__(f"post {post_id} not found")
        self.post_id = post_id


class InMemoryPostRepository:
    def __init__(self) -> None:
        self._posts: dict[int, Post] = {}
        self._next_id = 1

    def next_id(self) -> int:
        post_id = self._next_id
        self._next_id += 1
        return post_id

    def save(self, post: Post) -> Post:
        self._posts[post.id] = post
        return post

    def get(self, post_id: int) -> Post | None:
        return self._posts.get(post_id)

    def list(self) -> list[Post]:
        return [self._posts[key] for key in sorted(self._posts)]


class PostService:
    def __init__(
        self,
        repository: InMemoryPostRepository | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.repository = repository if repository is not None else InMemoryPostRepository()
        self.clock = clock

    def create(self, data: PostCreate, author_id: int) -> Post:
        post = Post(
            title=data.title,
            content=data.content,
            platform=data.platform,
            id=self.repository.next_id(),
            author_id=author_id,
            created_at=self.clock(),
        )
        return self.repository.save(post)

    def get(self, post_id: int) -> Post:
        post = self.repository.get(post_id)
        if post is None:
            raise PostNotFoundError(post_id)
        return post

    def list(self, *, author_id: int | None = None, status: str | None = None) -> list[Post]:
        if status is not None and status not in POST_STATUSES:
            raise ValidationError(f"must be one of {', '.join(POST_STATUSES)}", "status")
        return [
            post
            for post in self.repository.list()
            if (author_id is None or post.author_id == author_id)
            and (status is None or post.status == status)
        ]

    def update_status(self, post_id: int, status: str) -> Post:
        post = self.get(post_id)
        if status == "scheduled":
            raise ValidationError("use schedule() to schedule a post", "status")
        scheduled_at = post.scheduled_at if status == "published" else None
        return self.repository.save(replace(post, status=status, scheduled_at=scheduled_at))

    def schedule(self, post_id: int, when: datetime, platform: str) -> Post:
        """Schedule one post for publication on `platform` at `when` (timezone-aware, future)."""
        post = self.get(post_id)
        self._check_schedulable(post, when, platform)
        return self._apply_schedule(post, when, platform)

    def _check_schedulable(self, post: Post, when: datetime, platform: str) -> None:
        if not isinstance(when, datetime) or when.tzinfo is None:
            raise ValidationError("datetime must include a timezone", "scheduled_at")
        if when <= self.clock():
            raise ValidationError("scheduled_at must be in the future", "scheduled_at")
        validate_platform(platform)
        if post.status not in SCHEDULABLE_STATUSES:
            raise ValidationError(f"post {post.id} is {post.status} and cannot be scheduled", "status")

    def _apply_schedule(self, post: Post, when: datetime, platform: str) -> Post:
        scheduled = replace(post, status="scheduled", scheduled_at=when, platform=platform)
        return self.repository.save(scheduled)
