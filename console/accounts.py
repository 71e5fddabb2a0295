"""Accounts that come from outside the portal, a directory (console.directory) or an identity
provider (console.sso), are read again from there while their users stay: at their requests,
at their API calls and at every recheck of their open consoles."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import BACKEND_SESSION_KEY, SESSION_KEY, get_user_model, logout
from django.utils.translation import gettext

from console.directory import BACKEND as DIRECTORY_BACKEND
from console.directory import directory_recheck
from console.sso import SESSION_ID_TOKEN, identity_recheck

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from django.http import HttpRequest, HttpResponse

    from console.auth import User


def accounts_recheck(users: Iterable[User]) -> None:
    """Read again those of `users` that come from the directory or the identity provider and
    are due; each becomes inactive if its source no longer lets it in."""
    users = list(users)
    directory_recheck(users)
    identity_recheck(users)


class AccountRecheckMiddleware:
    """Logs out, at their next request, a user their directory or identity provider no longer
    lets in (which ends their consoles at once, console.notices), and says why."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        external = (
            settings.LDAP_SERVER_URI and request.session.get(BACKEND_SESSION_KEY) == DIRECTORY_BACKEND
        ) or (settings.OIDC_ISSUER and SESSION_ID_TOKEN in request.session)
        if not external:
            return self.get_response(request)
        user = request.user
        if user.is_authenticated:
            accounts_recheck([user])
        elif SESSION_KEY in request.session:
            # A console's recheck got there first: the account is inactive now, so Django no
            # longer loads it. The same logout, and the same words if its source dropped it.
            user = _session_user(request) or user
        if getattr(user, "pk", None) is not None and not user.is_active:
            logout(request)
            if _dropped_by_source(user):
                messages.error(
                    request,
                    gettext(
                        "Your account no longer gives access to the portal (your directory or identity "
                        "provider says so). Ask your administrator if this is a mistake."
                    ),
                )
        return self.get_response(request)


def _session_user(request: HttpRequest) -> User | None:
    """The user the session was logged in as, active or not."""
    try:
        return get_user_model().objects.filter(pk=request.session[SESSION_KEY]).first()
    except (ValueError, TypeError):
        return None


def _dropped_by_source(user: object) -> bool:
    """Whether the directory or the identity provider made `user` inactive (not an administrator)."""
    return any(
        getattr(getattr(user, relation, None), "suspended", False) for relation in ("directory", "identity")
    )
