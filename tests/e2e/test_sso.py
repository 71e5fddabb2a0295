"""Single sign-on through a real OpenID Connect provider (node-oidc-provider in its own process,
tests/identity_provider.py), on a portal sharing the e2e portal's database and VM, in Chromium:
sign in, see the VM the provider's group is granted, open its console, lose it when the
provider takes the group away, log out through the provider; and every way a sign-in must fail."""

from __future__ import annotations

import re

import pytest

from bench.browser import wait_until
from bench.setup import free_port
from tests.e2e.conftest import deactivate, grant_to_group, login
from tests.e2e.test_accessibility import violations
from tests.e2e.test_attacks import Browser
from tests.identity_provider import IdentityProvider

pytestmark = [pytest.mark.browser, pytest.mark.hypervisor]

RECHECK = 2  # OIDC_RECHECK_SECONDS of the portal under test


@pytest.fixture(scope="module")
def provider(tmp_path_factory):
    return IdentityProvider(tmp_path_factory.mktemp("oidc"), free_port())


@pytest.fixture(scope="module")
def sso_portal(portal, provider):
    served = portal.daphne("daphne-sso", provider.portal_env(OIDC_RECHECK_SECONDS=str(RECHECK)))
    provider.start(served.url)
    grant_to_group(portal, "vm-operators")
    yield served
    provider.stop()


@pytest.fixture(autouse=True)
def honest_provider(provider):
    provider.tamper(None)


def sign_in(page, portal_url: str, uid: str) -> None:
    """The login page's single sign-on button, then the provider's own sign-in and consent pages
    (a fresh start: neither the portal nor the provider remembers an earlier sign-in)."""
    page.context.clear_cookies()
    page.goto(f"{portal_url}/accounts/login/")
    page.click("#sso-login")
    page.wait_for_selector("input[name=login]")
    page.fill("input[name=login]", uid)
    page.fill("input[name=password]", "any password: the provider's development sign-in")
    page.click("button[type=submit]")
    page.wait_for_load_state()
    if "/interaction/" in page.url:  # the provider asks to consent to the portal's scopes
        page.click("button[type=submit]")
    page.wait_for_load_state()


def _console_of_the_granted_vm(page, sso_portal, provider, portal, uid: str) -> None:
    """`uid`, in the groups that may use the portal and the demo VM, signs in and opens its console."""
    provider.person(uid, "portal-users", "vm-operators")
    Browser(portal).running_vm()
    sign_in(page, sso_portal.url, uid)
    page.wait_for_url(f"{sso_portal.url}/")
    page.goto(f"{sso_portal.url}/vms/{portal.vm_id()}/console/")
    page.wait_for_selector("#status.connected", timeout=20000)


def test_sign_in_open_the_granted_console_lose_it_with_the_group_and_log_out_at_the_provider(
    page, sso_portal, provider, portal
):
    provider.person("ada", "portal-users", "vm-operators")
    Browser(portal).running_vm()
    sign_in(page, sso_portal.url, "ada")
    page.wait_for_url(f"{sso_portal.url}/")
    assert "ada" in page.inner_text("header")
    page.click(f"a:text-is('{portal.vm_name}')")
    page.click("a.button:text-is('Console')")
    page.wait_for_selector("#status.connected", timeout=20000)

    provider.person("ada", "portal-users")  # the provider takes the granted group away
    _status_says(page, "you may no longer use this VM")

    page.goto(f"{sso_portal.url}/")
    page.click("button:text-is('Log out')")
    # The provider's end-session page, then back to the portal's login page.
    page.wait_for_selector("button[type=submit]")
    assert page.url.startswith(provider.issuer)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(rf"{re.escape(sso_portal.url)}/accounts/login/.*"))
    page.goto(f"{sso_portal.url}/")
    page.wait_for_url(re.compile(r".*/accounts/login/.*"))


def test_a_user_the_provider_disables_is_logged_out_and_their_console_ends(
    page, sso_portal, provider, portal
):
    _console_of_the_granted_vm(page, sso_portal, provider, portal, "grace")
    provider.person("grace", "portal-users", "vm-operators", disabled=True)
    _status_says(page, "deactivated")
    page.goto(f"{sso_portal.url}/")
    page.wait_for_url(re.compile(r".*/accounts/login/.*"))


def test_an_account_an_administrator_deactivated_stays_so_and_one_the_provider_dropped_comes_back(
    page, sso_portal, provider, portal
):
    provider.person("hedy", "portal-users")
    sign_in(page, sso_portal.url, "hedy")
    page.wait_for_url(f"{sso_portal.url}/")
    # Dropped by the provider (out of the allowed groups), then back in them: in again.
    provider.person("hedy", "another-team")
    sign_in(page, sso_portal.url, "hedy")
    assert "not in a group that may use this portal" in _refused(page)
    provider.person("hedy", "portal-users")
    sign_in(page, sso_portal.url, "hedy")
    page.wait_for_url(f"{sso_portal.url}/")
    # Made inactive by an administrator: signing in through the provider does not bring it back.
    deactivate(portal, "hedy")
    sign_in(page, sso_portal.url, "hedy")
    assert "deactivated by an administrator" in _refused(page)


def _status_says(page, words: str) -> None:
    """Wait (a few rechecks) until the console page's status line says `words`."""
    wait_until(
        page, f"document.querySelector('#status').textContent.includes({words!r})", timeout=4 * RECHECK + 10
    )


def _refused(page) -> str:
    page.wait_for_url(re.compile(r".*/accounts/login/.*"))
    return page.inner_text("body")


@pytest.mark.parametrize(
    ("mode", "said"),
    [
        ("signature", "its signature is not the provider's"),
        ("audience", "issued to another application"),
        ("issuer", "names another issuer"),
        ("expired", "answer has expired"),
        ("nonce", "a replayed answer"),
    ],
)
def test_a_forged_or_expired_answer_is_refused_with_its_reason(page, sso_portal, provider, mode, said):
    provider.person("mallory", "portal-users", "vm-operators")
    provider.tamper(mode)
    sign_in(page, sso_portal.url, "mallory")
    assert said in _refused(page)
    page.goto(f"{sso_portal.url}/")
    page.wait_for_url(re.compile(r".*/accounts/login/.*"))  # not logged in


def test_a_replayed_answer_is_refused(page, sso_portal, provider):
    provider.person("eve", "portal-users")
    callbacks = []
    page.on(
        "request", lambda request: callbacks.append(request.url) if "/sso/callback/" in request.url else None
    )
    sign_in(page, sso_portal.url, "eve")
    page.wait_for_url(f"{sso_portal.url}/")
    page.goto(callbacks[0])  # the same code and state again
    assert "already used (a replayed answer)" in _refused(page)


def test_the_login_page_with_single_sign_on_is_accessible(page, sso_portal):
    page.goto(f"{sso_portal.url}/accounts/login/")
    assert page.inner_text("#sso-login") == "Log in with Test IdP"
    assert violations(page) == []


def test_who_may_not_sign_in(page, sso_portal, provider):
    provider.person("outsider", "another-team")
    sign_in(page, sso_portal.url, "outsider")
    assert "not in a group that may use this portal" in _refused(page)
    # A local account's name given by the provider does not log in as that account.
    provider.person("admin", "portal-users", "portal-admins")
    sign_in(page, sso_portal.url, "admin")
    assert "An account named admin already exists" in _refused(page)


def test_when_the_provider_is_down_local_accounts_log_in_and_open_consoles_stay(
    page, browser, sso_portal, provider, portal
):
    _console_of_the_granted_vm(page, sso_portal, provider, portal, "linus")
    provider.stop()
    try:
        other = browser.new_context().new_page()
        other.goto(f"{sso_portal.url}/accounts/login/")
        other.click("#sso-login")
        other.wait_for_url(re.compile(r".*/accounts/login/.*"))
        assert "identity provider (Test IdP) does not answer" in other.inner_text("body")
        login(other, sso_portal)  # break glass: the local admin
        other.context.close()
        page.wait_for_timeout((3 * RECHECK + 2) * 1000)  # several rechecks without the provider
        assert page.locator("#status.connected").count() == 1
    finally:
        provider.start(sso_portal.url)
