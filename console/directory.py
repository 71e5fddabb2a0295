"""LDAP login (django-auth-ldap), and the directory read again while its users stay.

Directory accounts log in with their directory password; their portal groups mirror their
directory groups, so VM grants to a group follow the directory. The portal reads each
directory account again at most every LDAP_RECHECK_SECONDS while it makes requests or has
consoles open (`directory_recheck`): an entry removed, or out of LDAP_REQUIRE_GROUP, makes the
account inactive, which logs it out at its next request and ends its consoles at the next
round of their recheck (console.tickets). A directory that does not answer changes nothing:
the last answer stands, open consoles stay open, and the login page says the directory is
unreachable while local accounts still log in.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.utils import timezone
from django_auth_ldap.backend import LDAPBackend, ldap_error, populate_user

from console.models import DirectoryAccount

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from django.http import HttpRequest

    from console.auth import User

logger = logging.getLogger(__name__)

BACKEND = "console.directory.DirectoryBackend"
_errors = threading.local()  # the directory errors seen by this thread's current recheck


class DirectoryBackend(LDAPBackend):
    """django-auth-ldap's backend, which never takes over a local account: a directory entry
    named like an account that has its own password (the demo admin, a break-glass
    administrator) is not that account, and the local password stays the only way in."""

    def authenticate_ldap_user(self, ldap_user: Any, password: str) -> User | None:
        model = self.get_user_model()
        local = (
            model.objects.filter(username__iexact=self.ldap_to_django_username(ldap_user._username))
            .exclude(directory__isnull=False)
            .exists()
        )
        if local:
            return None
        return super().authenticate_ldap_user(ldap_user, password)


def _populated(sender: object, user: User, ldap_user: Any, **kwargs: object) -> None:
    """Every read of a directory account (a login, a recheck): note its DN and when."""
    user._directory_dn = ldap_user.dn  # type: ignore[attr-defined]  # saved with the user, below
    if not settings.AUTH_LDAP_REQUIRE_GROUP:
        user.is_active = True  # found in the directory: back, if a recheck had found it gone
    if user.pk is not None:
        # An account an administrator made inactive stays inactive, whatever the directory says;
        # only one the directory dropped (suspended) comes back with it.
        was_active = type(user).objects.filter(pk=user.pk).values_list("is_active", flat=True).first()
        admin_made_inactive = (
            was_active is False
            and not DirectoryAccount.objects.filter(user_id=user.pk, suspended=True).exists()
        )
        if admin_made_inactive:
            user.is_active = False


def _saved_account(user: User) -> None:
    DirectoryAccount.objects.update_or_create(
        user=user,
        defaults={"dn": getattr(user, "_directory_dn", ""), "checked_at": timezone.now(), "suspended": False},
    )


def _error(
    sender: object,
    context: str,
    user: object,
    request: HttpRequest | None,
    exception: Exception,
    **kwargs: object,
) -> None:
    """django-auth-ldap caught an LDAPError: remember it for the login page and the recheck."""
    if request is not None:
        request.directory_unreachable = True  # type: ignore[attr-defined]
    seen = getattr(_errors, "seen", None)
    if seen is not None:
        seen.append(exception)


def directory_signals_connect() -> None:
    """Connect the receivers above (called once, when the app is ready)."""
    populate_user.connect(_populated, dispatch_uid="directory-populated")
    ldap_error.connect(_error, dispatch_uid="directory-error")
    from django.contrib.auth.signals import user_logged_in

    user_logged_in.connect(_logged_in, dispatch_uid="directory-login")


def _logged_in(sender: object, request: HttpRequest, user: User, **kwargs: object) -> None:
    if getattr(user, "_directory_dn", None):
        _saved_account(user)


@contextlib.contextmanager
def _collecting_errors() -> Iterator[list[Exception]]:
    seen: list[Exception] = []
    _errors.seen = seen
    try:
        yield seen
    finally:
        _errors.seen = None


def directory_recheck(users: Iterable[User]) -> None:
    """Read again from the directory those of `users` that came from it and were last read
    over LDAP_RECHECK_SECONDS ago; each user object is updated in place (is_active, is_staff,
    groups). An entry gone makes its account inactive; a directory that does not answer
    changes nothing (and is asked again after the same interval, not at every request)."""
    if not settings.LDAP_SERVER_URI:
        return
    by_id = {user.pk: user for user in users if user.pk is not None}
    due_before = timezone.now() - timedelta(seconds=settings.LDAP_RECHECK_SECONDS)
    due = DirectoryAccount.objects.filter(user_id__in=by_id, checked_at__lte=due_before)
    for account in due:
        user = by_id[account.user_id]
        with _collecting_errors() as seen:
            fresh = DirectoryBackend().populate_user(user.username)
        if seen:
            logger.warning("directory did not answer for %s (kept as it was): %s", user.username, seen[0])
            DirectoryAccount.objects.filter(pk=account.pk).update(checked_at=timezone.now())
            continue
        if fresh is None:
            logger.info("directory account %s is gone from the directory: deactivated", user.username)
            type(user).objects.filter(pk=user.pk).update(is_active=False)
            user.is_active = False
        else:
            user.is_active, user.is_staff = fresh.is_active, fresh.is_staff
            if not fresh.is_active:
                logger.info("directory account %s left the portal's group: deactivated", user.username)
        DirectoryAccount.objects.filter(pk=account.pk).update(
            checked_at=timezone.now(), suspended=not user.is_active
        )
