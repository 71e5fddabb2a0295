"""Two-factor authentication (django-otp) through the pages, as a user with an authenticator app
would: the app's codes are computed from the key the set-up page shows (RFC 6238), and the
gate, the policy for staff, recovery codes, throttling and step-up are checked on the portal."""

from __future__ import annotations

import base64
import re
import time

import pytest
from django.contrib.sessions.backends.db import SessionStore
from django.test import Client
from django_otp.oath import TOTP

from console.globalconfig import STEP_UP_MINUTES, TWO_FACTOR_STAFF, config_set
from console.models import AuthEvent
from console.twofactor import SESSION_VERIFIED_AT

pytestmark = pytest.mark.django_db


class Authenticator:
    """An authenticator app holding the key the set-up page showed."""

    def __init__(self, page: str) -> None:
        key = re.search(r'<code id="totp-key">([A-Z2-7]+)</code>', page)[1]
        self.key = base64.b32decode(key + "=" * (-len(key) % 8))

    def code(self, steps_ahead: int = 0) -> str:
        """The code shown now (or `steps_ahead` 30-second steps later: one is within the drift
        the portal allows, and a code already used is refused)."""
        totp = TOTP(self.key)
        totp.time = time.time() + 30 * steps_ahead
        return f"{totp.token():06d}"


def logged_in(username: str, password: str) -> Client:
    client = Client()
    response = client.post("/accounts/login/", {"username": username, "password": password})
    assert response.status_code == 302, response.content[:400]
    return client


def set_up(client: Client) -> tuple[Authenticator, list[str]]:
    page = client.get("/accounts/two-factor/").content.decode()
    assert "Scan this code" in page and 'src="data:image/svg+xml;base64,' in page
    app = Authenticator(page)
    done = client.post("/accounts/two-factor/", {"action": "confirm", "code": app.code()}).content.decode()
    codes = re.findall(r"<li><code>([a-z0-9]+)</code></li>", done)
    assert len(codes) == 10 and "It is <strong>on</strong>" in done
    return app, codes


def test_a_user_sets_it_up_and_then_needs_a_code_after_the_password(user, vm):
    app, _ = set_up(logged_in("alice", "alice-pw-123"))

    client = logged_in("alice", "alice-pw-123")
    page = client.get("/")
    assert page.status_code == 302 and page["Location"] == "/accounts/two-factor/verify/?next=%2F"
    # Nothing else answers before the code: not a ticket, not the API through the session.
    ticket = client.post(f"/vms/{vm.id}/console/ticket/", HTTP_ACCEPT="application/json")
    assert ticket.status_code == 403 and ticket.json()["code"] == "second_factor_required"
    assert client.get("/api/v1/vms/").status_code == 403

    wrong = client.post("/accounts/two-factor/verify/", {"code": "000000", "next": "/"})
    assert wrong.status_code == 400 and "That code is not right" in wrong.content.decode()
    assert "taken in 1 second " in wrong.content.decode()  # django-otp's throttle, said
    time.sleep(1.1)
    replayed = client.post("/accounts/two-factor/verify/", {"code": app.code(), "next": "/"})
    assert replayed.status_code == 400  # the code that turned it on was used already
    time.sleep(2.1)
    right = client.post("/accounts/two-factor/verify/", {"code": app.code(steps_ahead=1), "next": "/"})
    assert right.status_code == 302 and right["Location"] == "/"
    assert client.get("/").status_code == 200
    actions = list(AuthEvent.objects.filter(user=user).values_list("action", flat=True))
    assert actions.count(AuthEvent.Action.SECOND_FACTOR_REFUSED) == 2
    assert actions.count(AuthEvent.Action.SECOND_FACTOR) == 1


def test_a_recovery_code_works_once(user):
    _, codes = set_up(logged_in("alice", "alice-pw-123"))
    first = logged_in("alice", "alice-pw-123")
    assert first.post("/accounts/two-factor/verify/", {"code": codes[0], "next": "/"}).status_code == 302
    again = logged_in("alice", "alice-pw-123")
    assert again.post("/accounts/two-factor/verify/", {"code": codes[0], "next": "/"}).status_code == 400
    time.sleep(1.1)  # the throttle after a wrong code
    assert again.post("/accounts/two-factor/verify/", {"code": codes[1], "next": "/"}).status_code == 302


def test_wrong_codes_slow_the_next_ones_down(user):
    app, _ = set_up(logged_in("alice", "alice-pw-123"))
    client = logged_in("alice", "alice-pw-123")
    for _ in range(3):
        client.post("/accounts/two-factor/verify/", {"code": "123456", "next": "/"})
    # django-otp's throttle: after failures even the right code waits (1, 2, 4… seconds).
    assert client.post("/accounts/two-factor/verify/", {"code": app.code(1), "next": "/"}).status_code == 400


def test_the_next_address_stays_on_the_portal(user):
    app, codes = set_up(logged_in("alice", "alice-pw-123"))
    client = logged_in("alice", "alice-pw-123")
    response = client.post(
        "/accounts/two-factor/verify/", {"code": codes[0], "next": "https://evil.example/"}
    )
    assert response.status_code == 302 and response["Location"] == "/"


def test_staff_must_set_it_up_when_the_policy_says_so_and_cannot_turn_it_off(staff_user):
    config_set(key=TWO_FACTOR_STAFF, value="true", actor="test")
    client = logged_in("root", "root-pw-123")
    response = client.get("/")
    assert response.status_code == 302 and response["Location"] == "/accounts/two-factor/"
    assert "Staff must use two-factor authentication" in client.get("/accounts/two-factor/").content.decode()
    set_up(client)
    assert client.get("/").status_code == 200
    page = client.get("/accounts/two-factor/").content.decode()
    assert "Staff must keep it on" in page and "Turn two-factor authentication off" not in page


def test_turning_it_off_needs_a_code(user):
    app, codes = set_up(logged_in("alice", "alice-pw-123"))
    client = logged_in("alice", "alice-pw-123")
    client.post("/accounts/two-factor/verify/", {"code": codes[0], "next": "/"})
    client.post("/accounts/two-factor/", {"action": "remove", "code": "000000"})
    assert "It is <strong>on</strong>" in client.get("/accounts/two-factor/").content.decode()
    time.sleep(1.1)  # the throttle after a wrong code
    client.post("/accounts/two-factor/", {"action": "remove", "code": codes[1]})
    assert "Scan this code" in client.get("/accounts/two-factor/").content.decode()
    assert logged_in("alice", "alice-pw-123").get("/").status_code == 200  # no code asked any more


def test_step_up_asks_for_a_fresh_code_before_a_console_or_a_vv_file(user, vm):
    config_set(key=STEP_UP_MINUTES, value="5", actor="test")
    app, codes = set_up(logged_in("alice", "alice-pw-123"))
    client = logged_in("alice", "alice-pw-123")
    client.post("/accounts/two-factor/verify/", {"code": codes[0], "next": "/"})
    ticket = client.post(f"/vms/{vm.id}/console/ticket/", HTTP_ACCEPT="application/json")
    assert ticket.json().get("code") != "second_factor_required"  # a code a moment ago

    session = SessionStore(client.cookies["sessionid"].value)  # six minutes later
    session[SESSION_VERIFIED_AT] = time.time() - 360
    session.save()
    ticket = client.post(f"/vms/{vm.id}/console/ticket/", HTTP_ACCEPT="application/json")
    assert ticket.status_code == 403 and ticket.json()["code"] == "second_factor_required"
    assert ticket.json()["verifyUrl"] == f"/accounts/two-factor/verify/?next=%2Fvms%2F{vm.id}%2Fconsole%2F"
    page = client.get(f"/vms/{vm.id}/console/")
    assert page.status_code == 302 and page["Location"].startswith("/accounts/two-factor/verify/")
    vv = client.post(f"/vms/{vm.id}/console.vv")
    assert (
        vv.status_code == 302 and vv["Location"] == f"/accounts/two-factor/verify/?next=%2Fvms%2F{vm.id}%2F"
    )
    assert "Confirm it is you" in client.get(page["Location"]).content.decode()
    client.post("/accounts/two-factor/verify/", {"code": codes[1], "next": "/"})
    ticket = client.post(f"/vms/{vm.id}/console/ticket/", HTTP_ACCEPT="application/json")
    assert ticket.json().get("code") != "second_factor_required"


def test_a_password_alone_cannot_change_the_second_factor(user):
    """Between the password and the code, the set-up page sends to the code's page and takes
    no action: no new recovery codes, no other authenticator, no turning it off."""
    from django_otp.plugins.otp_static.models import StaticToken
    from django_otp.plugins.otp_totp.models import TOTPDevice

    _, codes = set_up(logged_in("alice", "alice-pw-123"))
    before = (
        list(TOTPDevice.objects.values_list("pk", "key")),
        sorted(StaticToken.objects.values_list("token", flat=True)),
    )
    attacker = logged_in("alice", "alice-pw-123")  # has the password only
    page = attacker.get("/accounts/two-factor/")
    assert page.status_code == 302 and page["Location"].startswith("/accounts/two-factor/verify/")
    for form in (
        {"action": "renew"},
        {"action": "confirm", "code": "123456"},
        {"action": "remove", "code": codes[0]},
    ):
        response = attacker.post("/accounts/two-factor/", form)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/two-factor/verify/")
        assert "<code>" not in response.content.decode()
    after = (
        list(TOTPDevice.objects.values_list("pk", "key")),
        sorted(StaticToken.objects.values_list("token", flat=True)),
    )
    assert after == before
