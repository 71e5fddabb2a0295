"""The base of every error a user can cause: it carries its HTTP status and a stable code, so
pages, the API and the proxies report it the same way."""

from __future__ import annotations


class PortalError(Exception):
    """An error a user can cause and act on; `message` says what to do in words."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
