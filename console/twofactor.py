"""Two-factor authentication, with django-otp: a TOTP authenticator and ten recovery codes.

A user who set it up gives a code after their password before any page (or the API through
their login session) answers; staff must set it up when auth.twoFactorForStaff is on. With
auth.stepUpMinutes, opening a console, a serial console or a .vv file asks again for a code
when the last one is older than that (`step_up_check`). API tokens are not asked: a token is
made on a page that was, and is its own credential (revocable, expiring).

django-otp throttles each device after failures (delays that double), so codes cannot be
guessed at speed; every code given, right or wrong, is recorded in the audit trail.
"""

from __future__ import annotations

import base64
import math
import time
from typing import TYPE_CHECKING

import qrcode
import qrcode.image.svg
from django.db import transaction
from django.http import JsonResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme, urlencode
from django_otp import login as otp_login
from django_otp import match_token, user_has_device
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from console.errors import SecondFactorRequired
from console.globalconfig import STEP_UP_MINUTES, TWO_FACTOR_STAFF, config_int, config_value
from console.models import AuthEvent
from console.origins import client_ip

if TYPE_CHECKING:
    from collections.abc import Callable

    from django.http import HttpRequest, HttpResponse

    from console.auth import User

SESSION_VERIFIED_AT = "otp_verified_at"
RECOVERY_CODES = 10
# Paths a user between their password and their code may reach: logging in and out, giving
# the code or setting it up, and what those pages load.
OPEN_PATHS = ("/accounts/", "/static/", "/healthz", "/readyz", "/metrics")


def two_factor_enabled(user: User) -> bool:
    """Whether `user` has a confirmed authenticator."""
    return user_has_device(user, confirmed=True)


def two_factor_required(user: User) -> bool:
    """Whether `user` must set up two-factor authentication before going on (staff, by policy)."""
    return user.is_staff and config_value(TWO_FACTOR_STAFF) == "true" and not two_factor_enabled(user)


def verify_url(next_path: str) -> str:
    return f"{reverse('two-factor-verify')}?{urlencode({'next': next_path})}"


def safe_next(request: HttpRequest, wanted: str, default: str) -> str:
    ok = url_has_allowed_host_and_scheme(wanted, {request.get_host()}, require_https=request.is_secure())
    return wanted if wanted and ok else default


def step_up_check(request: HttpRequest, back_to: str) -> None:
    """Raise SecondFactorRequired if opening a console needs a fresh code first."""
    minutes = config_int(STEP_UP_MINUTES)
    user = request.user
    if not minutes or not user.is_authenticated or not two_factor_enabled(user):
        return
    verified_at = request.session.get(SESSION_VERIFIED_AT, 0)
    if time.time() - verified_at > minutes * 60:
        raise SecondFactorRequired(
            f"Confirm it is you: give a code from your authenticator (asked every {minutes} minutes "
            "before a console opens).",
            verify_url=verify_url(back_to),
        )


def second_factor_verify(request: HttpRequest, user: User, code: str) -> bool:
    """Check a code (TOTP or recovery) of `user`'s; on success mark the session verified."""
    code = "".join(code.split())
    device = match_token(user, code) if code else None
    AuthEvent.objects.create(
        user=user,
        username=user.get_username(),
        action=AuthEvent.Action.SECOND_FACTOR if device else AuthEvent.Action.SECOND_FACTOR_REFUSED,
        client_address=client_ip(request.META.get("REMOTE_ADDR")),
    )
    if device is None:
        return False
    otp_login(request, device)
    request.session[SESSION_VERIFIED_AT] = time.time()
    return True


def second_factor_wait(user: User) -> int:
    """Seconds before `user`'s authenticator takes a code again (django-otp's throttle after
    wrong codes; recovery codes have their own), 0 if it takes one now."""
    now = timezone.now()
    waits = [
        (info["locked_until"] - now).total_seconds()
        for allowed, info in (
            device.verify_is_allowed() for device in TOTPDevice.objects.filter(user=user, confirmed=True)
        )
        if not allowed and info and info.get("locked_until")
    ]
    return math.ceil(max(waits, default=0))


# --- setting it up ---------------------------------------------------------------------------


def totp_enrolment(user: User) -> TOTPDevice:
    """The authenticator being set up (unconfirmed), made if there is none."""
    device = TOTPDevice.objects.filter(user=user, confirmed=False).first()
    if device is None:
        device = TOTPDevice.objects.create(user=user, name="authenticator", confirmed=False)
    return device


def totp_secret(device: TOTPDevice) -> str:
    """The key as an authenticator app takes it by hand (base32)."""
    return base64.b32encode(device.bin_key).decode().rstrip("=")


def totp_qr_data_uri(device: TOTPDevice) -> str:
    """The otpauth:// URI as a QR code (SVG, as a data: URI the page's policy admits)."""
    image = qrcode.make(device.config_url, image_factory=qrcode.image.svg.SvgPathImage, box_size=8)
    return "data:image/svg+xml;base64," + base64.b64encode(image.to_string()).decode()


@transaction.atomic
def totp_enrolment_confirm(request: HttpRequest, user: User, code: str) -> list[str] | None:
    """Confirm the authenticator being set up with a code from it: its recovery codes (shown
    once), or None if the code is wrong."""
    device = totp_enrolment(user)
    if not device.verify_token("".join(code.split())):
        return None
    TOTPDevice.objects.filter(user=user, confirmed=True).delete()  # one authenticator a user
    device.confirmed = True
    device.save()
    otp_login(request, device)
    request.session[SESSION_VERIFIED_AT] = time.time()
    return recovery_codes_renew(user)


@transaction.atomic
def recovery_codes_renew(user: User) -> list[str]:
    """Ten new single-use recovery codes (the old ones no longer work)."""
    device, _ = StaticDevice.objects.get_or_create(user=user, name="recovery", defaults={"confirmed": True})
    device.token_set.all().delete()
    codes = [StaticToken.random_token() for _ in range(RECOVERY_CODES)]
    StaticToken.objects.bulk_create([StaticToken(device=device, token=code) for code in codes])
    return codes


def two_factor_remove(user: User) -> None:
    TOTPDevice.objects.filter(user=user).delete()
    StaticDevice.objects.filter(user=user).delete()


# --- the gate --------------------------------------------------------------------------------


class TwoFactorMiddleware:
    """Between a password and a code (or a staff user who must set it up), only the accounts
    pages answer: a page goes to the code's page, a JSON request is refused saying so."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        user = request.user
        if not user.is_authenticated or request.path.startswith(OPEN_PATHS):
            return self.get_response(request)
        if two_factor_enabled(user) and not user.is_verified():  # type: ignore[attr-defined]  # OTPMiddleware's
            where, words = verify_url(request.get_full_path()), "give a code from your authenticator first"
        elif two_factor_required(user):
            where, words = (
                reverse("two-factor"),
                "set up two-factor authentication first (required for staff)",
            )
        else:
            return self.get_response(request)
        if request.path.startswith("/api/") or "application/json" in request.headers.get("Accept", ""):
            return JsonResponse(
                {
                    "error": f"Log-in not complete: {words}.",
                    "code": "second_factor_required",
                    "verifyUrl": where,
                },
                status=403,
            )
        return redirect(where)
