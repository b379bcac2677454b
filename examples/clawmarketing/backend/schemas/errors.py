"""Errors raised by schema validation."""

from __future__ import annotations


class ValidationError(ValueError):
    """Invalid client input. Routers turn it into HTTP 400."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def to_dict(self) -> dict:
        return {"code": "validation_error", "message": self.message, "field": self.field}
