"""What the attack review tried, against the servers as they run: Daphne, uvicorn, websockify.

A plain HTTP client logs in like a browser would; WebSockets are opened by hand, with the
Origin an attacker's page would send.
"""

from __future__ import annotations

import re
import time

import pytest
import requests
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.e2e.conftest import ARTIFACTS, PASSWORD

pytestmark = [pytest.mark.hypervisor]


class Browser:
    """A logged-in HTTP session against a running portal."""

    def __init__(self, portal, username: str = "admin", password: str = PASSWORD) -> None:
        self.portal = portal
        self.http = requests.Session()
        page = self.http.get(f"{portal.url}/accounts/login/")
        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)[1]
        response = self.http.post(
            f"{portal.url}/accounts/login/",
            {"username": username, "password": password, "csrfmiddlewaretoken": csrf},
            headers={"Origin": portal.url},
        )
        assert response.ok and "sessionid" in self.http.cookies
        self.vm_id = portal.vm_id()

    def post(self, path: str, headers: dict | None = None, **kwargs) -> requests.Response:
        sent = {"X-CSRFToken": self.http.cookies["csrftoken"], "Origin": self.portal.url, **(headers or {})}
        return self.http.post(f"{self.portal.url}{path}", headers=sent, **kwargs)

    def running_vm(self) -> None:
        self.post(f"/vms/{self.vm_id}/start/")  # already running is fine

    def ticket(self, path: str = "console/ticket/") -> dict:
        response = self.post(f"/vms/{self.vm_id}/{path}")
        assert response.status_code == 200, response.text
        return response.json()

    def socket_url(self, ticket: dict) -> str:
        return f"ws://{self.portal.url.split('://')[1]}{ticket['wsPath']}?token={ticket['token']}"

    def socket(self, ticket: dict):
        """The ticket's console WebSocket, opened as this user's page would."""
        return connect(
            self.socket_url(ticket), origin=self.portal.url, additional_headers={"Cookie": self.cookie()}
        )

    def cookie(self) -> str:
        return f"sessionid={self.http.cookies['sessionid']}"

    def logout(self) -> None:
        self.post("/accounts/logout/")


def close_code(url: str, origin: str, cookie: str = "", timeout: float = 5) -> int | None:
    """Open a WebSocket and read until it closes; the close code (None if it stayed open)."""
    try:
        with connect(url, origin=origin, additional_headers={"Cookie": cookie}, open_timeout=5) as ws:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                ws.recv(timeout=deadline - time.monotonic())
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else 1006
    except TimeoutError:
        return None
    except InvalidStatus as refused:
        return refused.response.status_code
    return None


@pytest.fixture(scope="module")
def admin(portal):
    browser = Browser(portal)
    portal.manage("globalconfig", "set", "kvm.consoleMode", "vnc")
    browser.running_vm()
    return browser


def test_the_demo_pages_of_spice_html5_are_not_served(portal):
    for path in ("spice-html5/spice_auto.html", "spice-html5/spice.html", ".clients.stamp"):
        response = requests.get(f"{portal.url}/static/{path}", timeout=10)
        assert response.status_code == 404, path
        assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    module = requests.get(f"{portal.url}/static/spice-html5/main.js", timeout=10)
    assert module.status_code == 200
    assert module.headers["X-Content-Type-Options"] == "nosniff"
    assert "frame-ancestors 'none'" in module.headers["Content-Security-Policy"]


def test_a_page_on_another_port_of_the_same_host_is_refused(portal, admin):
    ticket = admin.ticket()
    url = f"ws://127.0.0.1:{portal.url.rsplit(':', 1)[1]}{ticket['wsPath']}?token={ticket['token']}"
    assert close_code(url, "http://127.0.0.1:1", admin.cookie()) == 4001
    assert close_code(url, "https://" + portal.url.split("://")[1], admin.cookie()) == 4001
    # Malformed: refused, never a 500 (Daphne's WebSocket layer answers 400 before the portal).
    assert close_code(url, "http://[::1", admin.cookie()) in (400, 4001)
    assert close_code(url, portal.url, admin.cookie(), timeout=1) is None  # its own page: admitted


def test_no_ticket_reaches_daphnes_access_log(portal):
    secret = "0123456789abcdef" * 3
    requests.get(f"{portal.url}/accounts/login/?next=/&token={secret}", timeout=10)
    time.sleep(0.5)
    log = (ARTIFACTS / "daphne.log").read_text()
    assert secret not in log
    assert "GET /accounts/login/?next=/&token=[redacted]" in log  # the line is kept


def test_no_ticket_reaches_uvicorns_access_log_and_its_lines_stay_whole(uvicorn_portal):
    secret = "fedcba9876543210" * 3
    requests.get(f"{uvicorn_portal.url}/accounts/login/?token={secret}", timeout=10)
    time.sleep(0.5)
    log = (ARTIFACTS / "uvicorn.log").read_text()
    assert secret not in log
    assert '"GET /accounts/login/?token=[redacted] HTTP/1.1" 200' in log


def test_a_page_ticket_is_no_bearer_token_on_websockify(portal, websockify_portal, admin):
    proxy = websockify_portal.env["CONSOLE_PROXY_URL"]
    ticket = admin.ticket()  # issued for the portal's own proxy
    assert close_code(f"{proxy}?token={ticket['token']}", portal.url) == 4012  # another proxy's
    time.sleep(0.3)
    log = (ARTIFACTS / "consoleproxy.log").read_text()
    assert "console refused for 127.0.0.1: the console ticket was issued for another console proxy" in log


def test_websockify_admits_its_tickets_only_from_their_page_and_ends_them_on_logout(websockify_portal):
    browser = Browser(websockify_portal)
    browser.running_vm()
    proxy = websockify_portal.env["CONSOLE_PROXY_URL"]
    stolen = browser.ticket()["token"]
    assert close_code(f"{proxy}?token={stolen}", "http://evil.example", timeout=1) == 4001
    time.sleep(0.3)
    assert (
        "console refused for 127.0.0.1: the page is not served by this portal"
        in (ARTIFACTS / "consoleproxy.log").read_text()
    )
    ticket = browser.ticket()["token"]
    closed = {}

    import threading

    def hold():
        closed["code"] = close_code(f"{proxy}?token={ticket}", websockify_portal.url, timeout=15)

    holder = threading.Thread(target=hold)
    holder.start()
    time.sleep(1.5)
    assert holder.is_alive()  # admitted, relaying
    browser.logout()
    holder.join(10)
    assert closed["code"] == 4009  # "you logged out", within a few seconds


def test_an_administrator_ends_a_console_through_websockify(websockify_portal):
    """The live consoles page's End, for a session websockify relays in a child process."""
    import threading

    browser = Browser(websockify_portal)
    browser.running_vm()
    proxy = websockify_portal.env["CONSOLE_PROXY_URL"]
    ticket = browser.ticket()["token"]
    closed = {}
    holder = threading.Thread(
        target=lambda: closed.update(
            code=close_code(f"{proxy}?token={ticket}", websockify_portal.url, timeout=20)
        )
    )
    holder.start()
    time.sleep(1.5)
    assert holder.is_alive()
    websockify_portal.manage(
        "shell",
        "-c",
        "from console.models import ConsoleSession as S; from django.contrib.auth.models import User; "
        "from console.sessions import console_session_end_request as end; "
        "s = S.objects.filter(via='websockify', ended_at__isnull=True).latest('started_at'); "
        "print(end(session_id=s.pk, by=User.objects.get(username='admin')))",
    )
    holder.join(15)
    assert closed["code"] == 4020
