"""Who is asking, for the type checker: the portal uses Django's own User model."""

from __future__ import annotations

from django.contrib.auth.models import AnonymousUser, User
from django.http import HttpRequest

__all__ = ["AnonymousUser", "AuthenticatedRequest", "User"]


class AuthenticatedRequest(HttpRequest):
    """A request past `login_required` (or the API's authentication): its user is an account."""

    user: User
