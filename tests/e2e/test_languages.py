"""The portal in German and French, in Chromium: the browser's language chooses (Accept-Language),
the switch at the foot of every page overrides; the console page's own words (its status, the
ends' advice) come from the JavaScript catalogue; dates are written the language's way; axe-core finds nothing
serious in the German pages; and a keyboard user leaves the console's screen, which takes every
key (Tab too), with Ctrl+Alt+Shift+T."""

from __future__ import annotations

import pytest
from django.utils import formats, timezone, translation

from tests.e2e.conftest import login
from tests.e2e.test_accessibility import violations
from tests.e2e.test_browser_console import CANVAS, start_vm_in_mode

pytestmark = [pytest.mark.hypervisor, pytest.mark.browser]


@pytest.fixture
def german(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="de-DE")
    yield context.new_page()
    context.close()


def test_the_portal_and_its_console_in_german_then_french(page, german, portal):
    start_vm_in_mode(page, portal, "vnc")  # as an English-speaking admin
    vm_id = portal.vm_id()
    german.goto(f"{portal.url}/accounts/login/")
    assert german.inner_text("h1") == "Anmelden"
    assert german.get_attribute("html", "lang") == "de"
    login(german, portal)
    assert german.inner_text("h1") == "Virtuelle Maschinen"
    found = {"VM list": violations(german)}
    german.goto(f"{portal.url}/vms/{vm_id}/")
    assert "Konsole freigeben" in german.inner_text("main")
    found["VM page"] = violations(german)

    german.goto(f"{portal.url}/vms/{vm_id}/console/")
    german.wait_for_selector("#status.connected", timeout=20000)
    assert german.inner_text("#status") == "Verbunden"  # the page's JavaScript, in German
    assert german.inner_text("#reconnect") == "Neu verbinden"
    found["VNC console"] = violations(german)
    assert not [f"{name}: {finding}" for name, findings in found.items() for finding in findings]

    # The way out of the screen's focus trap: the screen takes Tab; Ctrl+Alt+Shift+T does not.
    german.click(CANVAS["vnc"])
    german.keyboard.press("Tab")
    assert german.evaluate("document.activeElement.closest('#toolbar') === null")
    german.keyboard.press("Control+Alt+Shift+KeyT")
    assert german.evaluate("document.activeElement.closest('#toolbar') !== null")
    assert german.evaluate("document.activeElement.textContent").strip().endswith(portal.vm_name)

    # The switch: French, whatever the browser asks for; dates the French way.
    german.goto(f"{portal.url}/vms/{vm_id}/")
    german.select_option("#language", "fr")
    german.click("form.language button")
    german.wait_for_selector("h2:text-is('Partager la console')")
    with translation.override("fr"):
        month = formats.date_format(timezone.now(), "F")  # "novembre": its events' dates
    assert month in german.inner_text("main")
    german.goto(f"{portal.url}/")
    assert german.inner_text("h1") == "Machines virtuelles"
