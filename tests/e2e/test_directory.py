"""LDAP login against a real directory (Debian's slapd, tests/directory.py), on a portal that
shares the e2e portal's database and VM: log in through the directory in Chromium, see the VM a
directory group is granted, open its console, and lose it when the directory says so."""

from __future__ import annotations

import re
import threading
import time
import uuid

import pytest
import requests

from bench.browser import wait_until
from tests.directory import Directory
from tests.e2e.conftest import PASSWORD, deactivate, grant_to_group
from tests.e2e.test_attacks import Browser, close_code

pytestmark = [pytest.mark.browser, pytest.mark.hypervisor]

RECHECK = 2  # LDAP_RECHECK_SECONDS of the directory portal


@pytest.fixture(scope="module")
def directory(tmp_path_factory):
    found = Directory(tmp_path_factory.mktemp("slapd"))
    found.create()
    yield found
    found.stop()


@pytest.fixture(scope="module")
def ldap_portal(portal, directory):
    """The e2e portal's database, served by a Daphne that logs in through the directory."""
    served = portal.daphne("daphne-ldap", directory.portal_env(LDAP_RECHECK_SECONDS=str(RECHECK)))
    # The directory's group "vm-operators" is granted the demo VM (the group is made as an
    # administrator would, before anyone logged in through the directory).
    grant_to_group(portal, "vm-operators")
    return served


def _person(directory: Directory, *groups: str) -> tuple[str, str, str]:
    """A new directory person in `groups`: (uid, password, dn)."""
    uid, password = f"u{uuid.uuid4().hex[:8]}", "pw-" + uuid.uuid4().hex
    dn = directory.person(uid, password, name="Ada Lovelace")
    for group in groups:
        directory.join(group, dn)
    return uid, password, dn


@pytest.fixture(scope="module")
def groups(directory):
    for name in ("portal-users", "portal-admins", "vm-operators"):
        directory.group(name)


def _login_page(http: requests.Session, url: str, username: str, password: str) -> requests.Response:
    page = http.get(f"{url}/accounts/login/")
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)[1]
    return http.post(
        f"{url}/accounts/login/",
        {"username": username, "password": password, "csrfmiddlewaretoken": csrf},
        headers={"Origin": url},
    )


def _console_held(portal, ldap_portal, user: Browser, seconds: float) -> tuple[threading.Thread, dict]:
    """The demo VM's console opened by `user` and held for up to `seconds` in a thread; the
    dict gets its close code (None if it stayed open)."""
    Browser(portal).running_vm()
    url = user.socket_url(user.ticket())
    held: dict = {}
    holder = threading.Thread(
        target=lambda: held.setdefault(
            "code", close_code(url, ldap_portal.url, user.cookie(), timeout=seconds)
        )
    )
    holder.start()
    return holder, held


def test_a_directory_user_opens_the_granted_vm_and_loses_its_console_when_the_directory_says_so(
    page, ldap_portal, directory, groups, portal
):
    uid, password, dn = _person(directory, "portal-users", "vm-operators")
    Browser(portal).running_vm()

    page.goto(f"{ldap_portal.url}/accounts/login/")
    page.fill("#id_username", uid)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{ldap_portal.url}/")
    assert portal.vm_name in page.inner_text("body")  # granted to the directory group
    page.click(f"a:text-is('{portal.vm_name}')")
    page.click("a.button:text-is('Console')")
    page.wait_for_selector("#status.connected", timeout=20000)

    # Out of the group the VM is granted to: the console ends within a recheck or two.
    directory.leave("vm-operators", dn)
    wait_until(
        page,
        "document.querySelector('#status').textContent.includes('you may no longer use this VM')",
        timeout=4 * RECHECK + 10,
    )

    # Out of the portal's group: logged out at the next request, and told why.
    directory.leave("portal-users", dn)
    time.sleep(RECHECK + 0.5)
    page.goto(f"{ldap_portal.url}/")
    page.wait_for_url(re.compile(r".*/accounts/login/.*"))
    assert "no longer gives access" in page.inner_text("body")
    # And cannot log in again.
    page.fill("#id_username", uid)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    assert "didn't match" in page.inner_text("body")


def test_a_directory_removal_ends_the_console_of_a_user_making_no_requests(
    ldap_portal, directory, groups, portal
):
    """The console's own recheck reads the directory: no page request is needed."""
    uid, password, dn = _person(directory, "portal-users", "vm-operators")
    user = Browser(ldap_portal, uid, password)
    holder, held = _console_held(portal, ldap_portal, user, 30)
    time.sleep(1)
    directory.remove(dn)  # gone from the directory altogether
    holder.join(35)
    assert held["code"] == 4017  # DEACTIVATED
    assert _login_page(requests.Session(), ldap_portal.url, uid, password).url.endswith("/accounts/login/")


def test_staff_comes_from_the_directory_group(ldap_portal, directory, groups):
    uid, password, _ = _person(directory, "portal-users", "portal-admins")
    user = Browser(ldap_portal, uid, password)
    assert user.http.get(f"{ldap_portal.url}/admin/").status_code == 200
    plain_uid, plain_password, _ = _person(directory, "portal-users")
    plain = Browser(ldap_portal, plain_uid, plain_password)
    assert plain.http.get(f"{ldap_portal.url}/admin/", allow_redirects=False).status_code == 302


def test_a_directory_entry_never_takes_over_a_local_account(ldap_portal, directory, groups):
    dn = directory.person("admin", "directory-password-of-admin")
    directory.join("portal-users", dn)
    directory.join("portal-admins", dn)
    try:
        refused = _login_page(requests.Session(), ldap_portal.url, "admin", "directory-password-of-admin")
        assert "didn't match" in refused.text
        Browser(ldap_portal)  # the local password still logs in
    finally:
        directory.remove(dn)


def test_when_the_directory_is_down_local_accounts_log_in_and_open_consoles_stay(
    ldap_portal, directory, groups, portal
):
    uid, password, _ = _person(directory, "portal-users", "vm-operators")
    user = Browser(ldap_portal, uid, password)
    holder, held = _console_held(portal, ldap_portal, user, 4 * RECHECK + 4)
    directory.stop()
    try:
        refused = _login_page(requests.Session(), ldap_portal.url, uid, password)
        assert refused.status_code == 200 and "directory server (LDAP) does not answer" in refused.text
        assert "Local accounts still can" in refused.text
        Browser(ldap_portal, "admin", PASSWORD)  # break glass
        # Pages of a directory user logged in before keep working on the last answer.
        assert user.http.get(f"{ldap_portal.url}/", allow_redirects=False).status_code == 200
        holder.join(4 * RECHECK + 10)
        assert held["code"] is None  # still open after several rechecks
    finally:
        directory.start()


def test_the_directory_certificate_is_verified(portal, directory, groups):
    """Without the CA that signed slapd's certificate, the portal does not trust it: no login."""
    env = directory.portal_env()
    untrusting = portal.daphne("daphne-ldap-no-ca", {**env, "LDAP_CA_FILE": ""})
    uid, password, _ = _person(directory, "portal-users")
    refused = _login_page(requests.Session(), untrusting.url, uid, password)
    assert "directory server (LDAP) does not answer" in refused.text
    assert _login_page(requests.Session(), portal.url, "admin", PASSWORD).url.rstrip("/") == portal.url


def test_an_account_an_administrator_deactivated_stays_so_and_one_the_directory_dropped_comes_back(
    ldap_portal, directory, groups, portal
):
    uid, password, dn = _person(directory, "portal-users")
    Browser(ldap_portal, uid, password)  # the account is made at the first login
    # Dropped by the directory (out of the portal's group), then back in it: in again.
    directory.leave("portal-users", dn)
    refused = _login_page(requests.Session(), ldap_portal.url, uid, password)
    assert "didn't match" in refused.text
    directory.join("portal-users", dn)
    Browser(ldap_portal, uid, password)
    # Made inactive by an administrator: the directory does not bring it back.
    deactivate(portal, uid)
    refused = _login_page(requests.Session(), ldap_portal.url, uid, password)
    assert "deactivated in the portal" in refused.text
