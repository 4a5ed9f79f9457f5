"""Errors a producer body can raise before any event exists (the API answers them with HTTP 400)."""

from __future__ import annotations


class BodyError(ValueError):
    """A request body that cannot be read at all: not UTF-8, malformed JSON, not an object or array.

    `message` is user-facing (the 400 response text): short, no traceback, no body content beyond
    what the JSON parser reports about the position of the error."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message
