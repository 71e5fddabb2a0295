"""Single sign-on through an OpenID Connect provider, with Authlib.

Authlib runs the authorization code flow (with state, nonce and PKCE kept in the session) and
validates the ID token: its signature against the provider's published keys, its issuer,
audience, expiry and nonce. (mozilla-django-oidc 5.0, the other candidate, decodes the ID token
with the audience check turned off and lets an expired token escape as a server error.) This
module turns the validated claims into a portal account:

- An account is the provider's (issuer, subject), not a user name: a name the provider gives
  someone else later is not the same account. A local account of the same name is never taken
  over (the demo admin, break-glass administrators).
- The groups claim becomes the account's portal groups, so grants to a group follow the
  provider; OIDC_ALLOWED_GROUPS admits, OIDC_STAFF_GROUPS makes staff.
- Its tokens are kept encrypted, and the portal reads the claims again with them (refreshing
  the access token as needed) every OIDC_RECHECK_SECONDS while the user has pages or consoles
  open (`identity_recheck`): dropped from the allowed groups, disabled at the provider, or with
  its refresh token refused, the account becomes inactive, which logs it out and ends its
  consoles; a provider that does not answer changes nothing.

Every way a sign-in can fail ends on the login page with a sentence saying which (the
provider does not answer, refused, a forged or expired answer, a replayed state).
"""

from __future__ import annotations

import base64
import hashlib
import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import requests
from authlib.integrations.base_client.errors import MismatchingStateError, OAuthError
from authlib.integrations.django_client import OAuth
from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.models import Group
from django.contrib.auth.validators import UnicodeUsernameValidator
from django.core.exceptions import ValidationError
from django.db import transaction
from django.shortcuts import redirect
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext, gettext_noop
from joserfc.errors import BadSignatureError, ClaimError, ExpiredTokenError, JoseError

from console.auth import User
from console.models import IdentityAccount

if TYPE_CHECKING:
    from collections.abc import Iterable

    from django.http import HttpRequest, HttpResponse

logger = logging.getLogger(__name__)

SESSION_ID_TOKEN = "sso_id_token"  # noqa: S105 (a session key) for the provider's end-session page (id_token_hint)
SESSION_NEXT = "sso_next"
TIMEOUT = 5  # seconds for any request to the provider


class SignInRefused(Exception):
    """A sign-in that cannot go on: `str()` is what the login page says."""


_oauth = OAuth()


def sso_enabled() -> bool:
    return bool(settings.OIDC_ISSUER)


def _client() -> Any:
    client = _oauth.create_client("portal")
    if client is None:
        _oauth.register(
            "portal",
            client_id=settings.OIDC_CLIENT_ID,
            client_secret=settings.OIDC_CLIENT_SECRET,
            server_metadata_url=f"{settings.OIDC_ISSUER}/.well-known/openid-configuration",
            client_kwargs={
                "scope": settings.OIDC_SCOPES,
                "code_challenge_method": "S256",
                "timeout": TIMEOUT,
            },
        )
        client = _oauth.create_client("portal")
    return client


def _unreachable() -> SignInRefused:
    return SignInRefused(
        gettext(
            "The identity provider (%(name)s) does not answer, so single sign-on cannot log you in right "
            "now. Local accounts still can. Try again in a few minutes, or tell your administrator."
        )
        % {"name": settings.OIDC_PROVIDER_NAME}
    )


def _metadata() -> dict[str, Any]:
    try:
        metadata: dict[str, Any] = _client().load_server_metadata()
    except (requests.RequestException, ValueError) as error:
        logger.warning("identity provider %s: metadata not loaded: %s", settings.OIDC_ISSUER, error)
        raise _unreachable() from None
    if metadata.get("issuer") != settings.OIDC_ISSUER:  # OpenID Connect Discovery 1.0, 4.3
        logger.error("identity provider at %s calls itself %r", settings.OIDC_ISSUER, metadata.get("issuer"))
        raise SignInRefused(
            gettext(
                "The identity provider's configuration names another issuer than OIDC_ISSUER, so single "
                "sign-on is refused. Tell your administrator."
            )
        )
    return metadata


def _provider_answers() -> None:
    try:
        requests.get(
            f"{settings.OIDC_ISSUER}/.well-known/openid-configuration", timeout=TIMEOUT
        ).raise_for_status()
    except requests.RequestException as error:
        logger.warning("identity provider %s does not answer: %s", settings.OIDC_ISSUER, error)
        raise _unreachable() from None


# --- the sign-in ---------------------------------------------------------------------------


def sso_login(request: HttpRequest) -> HttpResponse:
    """Send the browser to the provider (state, nonce and PKCE verifier kept in the session),
    once it answers (Authlib keeps its configuration: asked again here, so a provider that went
    away is said on the login page, not in a browser error at its address)."""
    try:
        _provider_answers()
        _metadata()
    except SignInRefused as refused:
        messages.error(request, str(refused))
        return redirect("login")
    wanted = request.GET.get("next", "")
    safe = url_has_allowed_host_and_scheme(wanted, {request.get_host()}, require_https=request.is_secure())
    request.session[SESSION_NEXT] = wanted if safe else ""
    return _client().authorize_redirect(request, request.build_absolute_uri(reverse("sso-callback")))


def sso_callback(request: HttpRequest) -> HttpResponse:
    """The provider's answer: validated, turned into an account, logged in; or the login page
    saying why not."""
    try:
        user, token = _signed_in(request)
    except SignInRefused as refused:
        messages.error(request, str(refused))
        return redirect("login")
    wanted = request.session.pop(SESSION_NEXT, "")
    login(request, user, backend="django.contrib.auth.backends.ModelBackend")
    request.session[SESSION_ID_TOKEN] = token.get("id_token", "")
    return redirect(wanted or settings.LOGIN_REDIRECT_URL)


def _signed_in(request: HttpRequest) -> tuple[User, dict[str, Any]]:
    client = _client()
    try:
        # Authlib checks the audience only through `azp` unless told: the ID token must name
        # this portal in `aud`, come from the configured issuer, and carry its times.
        token = client.authorize_access_token(
            request,
            leeway=30,
            claims_options={
                "iss": {"essential": True, "value": settings.OIDC_ISSUER},
                "aud": {"essential": True, "value": settings.OIDC_CLIENT_ID},
                "sub": {"essential": True},
                "exp": {"essential": True},
                "iat": {"essential": True},
            },
        )
        claims = dict(token["userinfo"])
        extra = client.userinfo(token=token)
    except MismatchingStateError:
        raise SignInRefused(
            gettext(
                "This sign-in answer does not belong to a sign-in this browser started, or was already "
                "used (a replayed answer). Log in again."
            )
        ) from None
    except OAuthError as error:
        logger.info("identity provider refused a sign-in: %s", error.error)
        raise SignInRefused(
            gettext(
                "The identity provider refused the sign-in (%(error)s). Log in again, or ask "
                "your administrator for access."
            )
            % {"error": str(error.error)[:60]}
        ) from None
    except BadSignatureError:
        raise _forged(gettext_noop("its signature is not the provider's")) from None
    except ExpiredTokenError:
        raise SignInRefused(gettext("The identity provider's answer has expired. Log in again.")) from None
    except ClaimError as error:
        reasons = {
            "aud": gettext_noop("it was issued to another application"),
            "azp": gettext_noop("it was issued to another application"),
            "iss": gettext_noop("it names another issuer"),
            "nonce": gettext_noop("it answers another sign-in (its nonce does not match: a replayed answer)"),
        }
        raise _forged(reasons.get(error.claim, f"its {error.claim!r} claim is wrong or missing")) from None
    except JoseError as error:
        raise _forged(f"it could not be verified ({type(error).__name__})") from None
    except requests.RequestException as error:
        logger.warning("identity provider %s: %s", settings.OIDC_ISSUER, error)
        raise _unreachable() from None
    if extra.get("sub") != claims.get("sub"):
        raise _forged(gettext_noop("its user information names another subject"))
    claims.update(extra)
    return _account(claims, token), token


def _forged(why: str) -> SignInRefused:
    logger.warning("identity provider answer refused: %s", why)
    return SignInRefused(
        gettext(
            "The sign-in was refused: the identity provider's answer is not valid (%(why)s). Log in again."
        )
        % {"why": gettext(why)}
    )


# --- the account ---------------------------------------------------------------------------


def _groups(claims: dict[str, Any]) -> list[str]:
    found = claims.get(settings.OIDC_GROUPS_CLAIM) or []
    if isinstance(found, str):
        found = [found]
    return sorted({str(name)[:150] for name in found if str(name).strip()})


def _allowed(groups: list[str]) -> bool:
    return not settings.OIDC_ALLOWED_GROUPS or bool(set(groups) & set(settings.OIDC_ALLOWED_GROUPS))


def _account(claims: dict[str, Any], token: dict[str, Any]) -> User:
    """The portal account of these validated claims: found by (issuer, subject), or made."""
    subject = str(claims["sub"])
    link = (
        IdentityAccount.objects.select_related("user")
        .filter(issuer=settings.OIDC_ISSUER, subject=subject)
        .first()
    )
    if link is not None and not link.user.is_active and not link.suspended:
        raise SignInRefused(
            gettext(
                "Your portal account has been deactivated by an administrator. Ask your administrator if "
                "this is a mistake."
            )
        )
    groups = _groups(claims)
    if not _allowed(groups):
        if link is not None:
            _deactivate(link.user, "not in OIDC_ALLOWED_GROUPS")  # its other sessions end too
        raise SignInRefused(
            gettext(
                "Your identity provider account is not in a group that may use this portal. Ask your "
                "administrator for access."
            )
        )
    with transaction.atomic():
        if link is None:
            link = IdentityAccount(user=_new_user(claims), issuer=settings.OIDC_ISSUER, subject=subject)
        _claims_apply(link.user, claims, groups)
        _tokens_keep(link, token)
    return link.user


def _new_user(claims: dict[str, Any]) -> User:
    """A new account named by the username claim, unless that name is taken (never a takeover)."""
    username = str(claims.get(settings.OIDC_USERNAME_CLAIM) or "")
    try:
        UnicodeUsernameValidator()(username)
    except ValidationError:
        username = ""
    if not username or len(username) > 150:
        raise SignInRefused(
            gettext("The identity provider gave no usable user name (claim %(claim)r).")
            % {"claim": settings.OIDC_USERNAME_CLAIM}
        )
    if User.objects.filter(username__iexact=username).exists():
        raise SignInRefused(
            gettext(
                "An account named %(name)s already exists in the portal and is not linked to the identity "
                "provider, so single sign-on cannot use it. Ask your administrator."
            )
            % {"name": username}
        )
    user = User(username=username)
    user.set_unusable_password()
    user.save()
    return user


def _claims_apply(user: User, claims: dict[str, Any], groups: list[str]) -> None:
    user.first_name = str(claims.get("given_name") or claims.get("name") or "")[:150]
    user.last_name = str(claims.get("family_name") or "")[:150]
    user.email = str(claims.get("email") or "")[:254]
    user.is_active = True
    user.is_staff = bool(set(groups) & set(settings.OIDC_STAFF_GROUPS))
    user.save()
    user.groups.set([Group.objects.get_or_create(name=name)[0] for name in groups])


def _fernet() -> Fernet:
    key = hashlib.sha256(b"console-portal sso tokens\0" + settings.SECRET_KEY.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(key))


def _seal(value: str) -> str:
    return _fernet().encrypt(value.encode()).decode() if value else ""


def _open(value: str) -> str:
    try:
        return _fernet().decrypt(value.encode()).decode() if value else ""
    except InvalidToken:  # SECRET_KEY changed since
        return ""


def _tokens_keep(link: IdentityAccount, token: dict[str, Any]) -> None:
    link.suspended = False
    link.access_token = _seal(token.get("access_token", ""))
    expires_in = int(token.get("expires_in") or 0)
    link.access_expires_at = timezone.now() + timedelta(seconds=expires_in) if expires_in else None
    if token.get("refresh_token"):
        link.refresh_token = _seal(token["refresh_token"])
    link.checked_at = timezone.now()
    link.save()


def _deactivate(user: User, why: str) -> None:
    """Inactive because the provider says so (suspended: a later sign-in may bring it back)."""
    logger.info("single sign-on account %s deactivated: %s", user.username, why)
    User.objects.filter(pk=user.pk).update(is_active=False)
    IdentityAccount.objects.filter(user_id=user.pk).update(suspended=True)
    user.is_active = False


# --- read again while the user stays -------------------------------------------------------


class _Gone(Exception):
    """The provider no longer vouches for the account (tokens refused)."""


def identity_recheck(users: Iterable[User]) -> None:
    """Read again, from the provider, the claims of those of `users` that signed in through it
    and were last read over OIDC_RECHECK_SECONDS ago; each user object is updated in place."""
    if not sso_enabled():
        return
    by_id = {user.pk: user for user in users if user.pk is not None}
    due_before = timezone.now() - timedelta(seconds=settings.OIDC_RECHECK_SECONDS)
    for link in IdentityAccount.objects.filter(user_id__in=by_id, checked_at__lte=due_before):
        user = by_id[link.user_id]
        try:
            claims, token = _claims_now(link)
        except _Gone as gone:
            _deactivate(user, str(gone))
            IdentityAccount.objects.filter(pk=link.pk).update(checked_at=timezone.now(), refresh_token="")
            continue
        except (requests.RequestException, ValueError, OAuthError) as error:
            logger.warning(
                "identity provider did not answer for %s (kept as it was): %s", user.username, error
            )
            IdentityAccount.objects.filter(pk=link.pk).update(checked_at=timezone.now())
            continue
        groups = _groups(claims)
        if not _allowed(groups):
            _deactivate(user, "no longer in OIDC_ALLOWED_GROUPS")
        else:
            _claims_apply(user, claims, groups)
        if token:
            _tokens_keep(link, token)
        else:
            IdentityAccount.objects.filter(pk=link.pk).update(checked_at=timezone.now())


def _claims_now(link: IdentityAccount) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The account's claims from the userinfo endpoint, with its access token, or with a new one
    from its refresh token; and the new tokens if it took new ones."""
    endpoint = _metadata_or_raise()["userinfo_endpoint"]
    access = _open(link.access_token)
    fresh = link.access_expires_at is None or link.access_expires_at > timezone.now() + timedelta(seconds=5)
    token = None
    if not (access and fresh):
        token = _refreshed(link)
        access = token["access_token"]
    answer = requests.get(endpoint, headers={"Authorization": f"Bearer {access}"}, timeout=TIMEOUT)
    if answer.status_code == 401 and token is None:
        token = _refreshed(link)
        answer = requests.get(
            endpoint, headers={"Authorization": f"Bearer {token['access_token']}"}, timeout=TIMEOUT
        )
    if answer.status_code == 401:
        raise _Gone("the provider refuses its tokens")
    answer.raise_for_status()
    claims = answer.json()
    if str(claims.get("sub")) != link.subject:
        raise _Gone("the provider's user information names another subject")
    return claims, token


def _metadata_or_raise() -> dict[str, Any]:
    return _client().load_server_metadata()


def _refreshed(link: IdentityAccount) -> dict[str, Any]:
    refresh = _open(link.refresh_token)
    if not refresh:
        raise _Gone("its access token expired and there is no refresh token (log in again)")
    answer = requests.post(
        _metadata_or_raise()["token_endpoint"],
        data={"grant_type": "refresh_token", "refresh_token": refresh},
        auth=(settings.OIDC_CLIENT_ID, settings.OIDC_CLIENT_SECRET),
        timeout=TIMEOUT,
    )
    if answer.status_code in (400, 401):  # invalid_grant: revoked, expired, account disabled
        raise _Gone(
            f"the provider refused its refresh token ({answer.json().get('error', answer.status_code)})"
        )
    answer.raise_for_status()
    return answer.json()


def sso_logout_url(request: HttpRequest, id_token: str) -> str | None:
    """The provider's end-session page for a session that signed in through it, coming back to
    the login page; None when the provider has none or does not answer."""
    try:
        endpoint = _metadata().get("end_session_endpoint")
    except SignInRefused:
        return None
    if not endpoint:
        return None
    back = request.build_absolute_uri(reverse("login"))
    return str(
        requests.Request(
            "GET",
            endpoint,
            params={
                "id_token_hint": id_token,
                "post_logout_redirect_uri": back,
                "client_id": settings.OIDC_CLIENT_ID,
            },
        )
        .prepare()
        .url
    )
