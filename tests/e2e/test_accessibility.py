"""Accessibility: axe-core (the npm package, installed at set-up) finds no serious or critical
violation on any of the portal's pages, as a user sees them in Chromium, the running VM's
console pages (VNC, SPICE, serial) included, and in the dark theme (the system's preference);
the skip link leads a keyboard user to the content."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.test_browser_console import start_vm_in_mode
from tests.e2e.test_serial_console import open_serial

pytestmark = [pytest.mark.hypervisor, pytest.mark.browser]

AXE = Path(__file__).resolve().parents[2] / "node_modules" / "axe-core" / "axe.min.js"


SERIOUS = """async () => (await axe.run(document, {resultTypes: ["violations"]})).violations
  .filter((v) => ["serious", "critical"].includes(v.impact))
  .map((v) => `${v.impact} ${v.id}: ${v.help}: ` +
    v.nodes.slice(0, 3).map((n) => `${n.html} (${n.failureSummary})`).join("; "))"""


def violations(page) -> list[str]:
    """axe-core's serious and critical findings on the page as it is now (evaluated through
    DevTools: the portal's Content-Security-Policy allows no injected script, rightly)."""
    page.evaluate(AXE.read_text())
    found = page.evaluate(SERIOUS)
    return found


def test_every_page_has_no_serious_accessibility_violation(page, portal):
    page.goto(f"{portal.url}/accounts/login/")
    found = {"login": violations(page)}
    start_vm_in_mode(page, portal, "vnc")
    vm_id = portal.vm_id()
    for name, path in (
        ("VM list", "/"),
        ("VM page", f"/vms/{vm_id}/"),
        ("API tokens", "/account/tokens/"),
        ("live consoles", "/consoles/live/"),
        ("recordings", "/recordings/"),
        ("two-factor set-up", "/accounts/two-factor/"),
    ):
        page.goto(f"{portal.url}{path}")
        found[name] = violations(page)
    # From the keyboard alone: the first Tab reaches the skip link, which leads to the content.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to the content"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    page.emulate_media(color_scheme="dark")  # the dark theme, as a system asking for it gets
    for name, path in (
        ("VM list, dark", "/"),
        ("VM page, dark", f"/vms/{vm_id}/"),
        ("tokens, dark", "/account/tokens/"),
        ("two-factor set-up, dark", "/accounts/two-factor/"),
    ):
        page.goto(f"{portal.url}{path}")
        assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(18, 21, 26)"
        found[name] = violations(page)
    page.emulate_media(color_scheme="light")
    page.goto(f"{portal.url}/vms/{vm_id}/console/")
    page.wait_for_selector("#status.connected", timeout=20000)
    found["VNC console"] = violations(page)
    start_vm_in_mode(page, portal, "spice")
    page.goto(f"{portal.url}/vms/{vm_id}/console/")
    page.wait_for_selector("#status.connected", timeout=20000)
    found["SPICE console"] = violations(page)
    page.goto(f"{portal.url}/vms/{vm_id}/")
    open_serial(page, portal)
    page.wait_for_selector("#status.connected", timeout=20000)
    found["serial console"] = violations(page)
    bad = [f"{name}: {finding}" for name, findings in found.items() for finding in findings]
    assert not bad, "\n".join(bad)
