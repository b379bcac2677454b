"""The request object handed to router functions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from backend.services.post_service import PostService


@dataclass
class Request:
    method: str
    path: str
    headers: Mapping[str, str] = field(default_factory=dict)
    path_params: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)
    service: PostService = field(default_factory=PostService)
