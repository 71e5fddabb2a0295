"""Phones: on a phone-sized screen with touch (Chromium emulating one), the VM list and the VM
page fit the width, the console connects scaled to the window, and text typed in the Type text
field (the on-screen keyboard's way in) reaches the guest's shell (read from its serial port)."""

from __future__ import annotations

import secrets

import pytest
from django.conf import settings

from tests.e2e.conftest import login, wait_for_canvas
from tests.e2e.test_browser_console import CANVAS, start_vm_in_mode
from tests.helpers import SerialReader

pytestmark = [pytest.mark.hypervisor, pytest.mark.browser]

PHONE = {
    "viewport": {"width": 390, "height": 844},
    "device_scale_factor": 2,
    "is_mobile": True,
    "has_touch": True,
}
FITS = "document.documentElement.scrollWidth <= window.innerWidth"


@pytest.mark.parametrize("mode", ["vnc"])  # SPICE's page shares the toolbar and the scaling
def test_a_phone_opens_the_console_and_types(browser, portal, mode):
    context = browser.new_context(**PHONE)
    page = context.new_page()
    try:
        login(page, portal)
        start_vm_in_mode(page, portal, mode)
        assert page.evaluate(FITS), "the VM page is wider than the phone"
        page.goto(f"{portal.url}/")
        assert page.evaluate(FITS), "the VM list is wider than the phone"
        page.tap("a.button:text-is('Console')") if page.locator(
            "a.button:text-is('Console')"
        ).count() else None
        page.goto(f"{portal.url}/vms/{portal.vm_id()}/console/")
        page.wait_for_selector("#status.connected", timeout=20000)
        assert page.get_attribute("#scale", "aria-pressed") == "true"  # scaled to the window
        wait_for_canvas(page, CANVAS[mode], lambda s: s["colours"] >= 2 and s["lit"] > 200)
        box = page.locator(CANVAS[mode]).bounding_box()
        assert box is not None and box["width"] <= 390 + 1
        page.tap(CANVAS[mode])  # a tap is a click: no error, the console stays
        reader = SerialReader(settings.LIBVIRT_URI, portal.vm_name)
        try:
            reader.wait_for_prompt()
            reader.wait_for(b"guest:~# ")
            marker = f"phone-{secrets.token_hex(4)}"
            page.fill("#type-text-input", f"echo {marker} > /dev/ttyS0")
            page.tap("#type-text button")
            reader.wait_for(f"{marker}\r\n".encode(), timeout=20)
        finally:
            reader.close()
        assert "connected" in page.get_attribute("#status", "class")
    finally:
        context.close()
