"""API tokens: made and named by their user, shown once, stored as a SHA-256, revocable."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from django.utils import timezone

from console.accounts import accounts_recheck
from console.models import ApiToken, ConsoleSession
from console.notices import console_sessions_notify
from console.sessions import open_sessions

if TYPE_CHECKING:
    from console.auth import User

TOKEN_PREFIX = "vcp_"  # noqa: S105 - not a secret: recognisable in a leaked file or a secret scanner
LAST_USED_PRECISION = timedelta(seconds=60)  # one write a minute per token at most


def _hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def api_token_create(*, user: User, name: str, expires_at: datetime | None = None) -> tuple[ApiToken, str]:
    """A new token for `user`: the row, and the token itself (shown once, never stored)."""
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        user=user,
        name=name.strip()[:64] or "unnamed",
        key_hash=_hash(raw),
        prefix=raw[:12],
        expires_at=expires_at,
    )
    return token, raw


def api_token_revoke(*, user: User, token_id: int) -> bool:
    """Revoke one of `user`'s tokens, ending the consoles opened with it; False when they have
    no such live token."""
    revoked = bool(
        ApiToken.objects.filter(user=user, pk=token_id, revoked_at__isnull=True).update(
            revoked_at=timezone.now()
        )
    )
    if revoked:
        opened = open_sessions(ConsoleSession.objects.filter(ticket__api_token_id=token_id))
        console_sessions_notify(opened.values_list("pk", flat=True))
    return revoked


def api_token_find(raw: str) -> ApiToken | None:
    """The live token `raw` is (its active user selected), or None (unknown, revoked, expired)."""
    if not raw.startswith(TOKEN_PREFIX):
        return None
    token = (
        ApiToken.objects.select_related("user").filter(key_hash=_hash(raw), revoked_at__isnull=True).first()
    )
    if token is not None:
        accounts_recheck([token.user])  # a directory account the directory dropped: inactive
    now = timezone.now()
    if (
        token is None
        or (token.expires_at is not None and token.expires_at <= now)
        or not token.user.is_active
    ):
        return None
    if token.last_used_at is None or now - token.last_used_at > LAST_USED_PRECISION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token
