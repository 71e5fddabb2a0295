"""Console operations in Chromium: a staff user watches live consoles and ends one; the user's
page says why, and the record names who ended it. Thumbnails of running VMs' screens."""

import io

import pytest
from PIL import Image

from bench.browser import wait_until
from tests.e2e.conftest import PASSWORD, login
from tests.e2e.test_browser_console import start_vm_in_mode
from tests.e2e.test_serial_console import second_admin  # noqa: F401 - a fixture

pytestmark = [pytest.mark.browser, pytest.mark.hypervisor]


def test_staff_sees_a_console_live_and_ends_it(browser, page, portal, second_admin):  # noqa: F811
    start_vm_in_mode(page, portal, "vnc")
    page.click("a.button:text-is('Console')")
    page.wait_for_selector("#status.connected", timeout=20000)

    context = browser.new_context()
    staff = context.new_page()
    try:
        staff.goto(f"{portal.url}/accounts/login/")
        staff.fill("#id_username", second_admin)
        staff.fill("#id_password", PASSWORD)
        staff.click("button[type=submit]")
        staff.goto(f"{portal.url}/vms/{portal.vm_id()}/")  # the VM's page lists its open consoles
        assert "VNC through the portal WebSocket proxy, admin" in staff.inner_text("#open-consoles")
        staff.goto(f"{portal.url}/consoles/live/")
        row = f"#live-consoles tbody tr:has-text('{portal.vm_name}'):has-text('admin')"
        staff.wait_for_selector(row, timeout=5000)
        cells = staff.locator(row).first.locator("td").all_inner_texts()
        assert cells[3] == "VNC" and cells[4] == "channels" and cells[5] == "127.0.0.1"
        staff.locator(row).first.locator("button:text-is('End')").click()
        wait_until(
            page, "document.querySelector('#status').textContent.includes('an administrator ended')", 10
        )
        wait_until(staff, "document.querySelectorAll('#live-consoles tbody tr').length === 0", 10)
    finally:
        context.close()
    record = portal.manage(
        "shell",
        "-c",
        "from console.models import ConsoleSession as S; "
        "s = S.objects.filter(via='channels').latest('started_at'); "
        "print(s.ended_by.username, '|', s.end_reason, '|', s.bytes_to_client > 0)",
    )
    assert record.strip().splitlines()[-1] == "ops | an administrator ended this console session | True"


def test_thumbnail_shows_the_screen_without_taking_the_console(browser, page, portal):
    start_vm_in_mode(page, portal, "vnc")
    page.click("a.button:text-is('Console')")
    page.wait_for_selector("#status.connected", timeout=20000)

    context = browser.new_context()
    other = context.new_page()
    try:
        login(other, portal)
        other.wait_for_selector(f"img.thumbnail[alt*='{portal.vm_name}']", timeout=10000)
        response = other.request.get(f"{portal.url}/vms/{portal.vm_id()}/thumbnail.png")
        assert response.status == 200 and response.headers["content-type"] == "image/png"
        image = Image.open(io.BytesIO(response.body())).convert("RGB")
        assert image.width <= 320
        colours = len(set(image.getdata()))
        assert colours >= 2  # the guest's text on black, not a blank placeholder
    finally:
        context.close()
    page.wait_for_timeout(1000)
    assert "Connected" in page.inner_text("#status")  # the user's console stayed connected


def test_an_idle_console_is_warned_then_ended_and_an_active_one_is_not(browser, page, portal):
    """console.idleTimeoutMinutes set to 1: the page warns at once (less than a minute left),
    the console nobody touches ends after a minute, the one whose user moves the mouse stays."""
    start_vm_in_mode(page, portal, "vnc")
    portal.manage("globalconfig", "set", "console.idleTimeoutMinutes", "1")
    context = browser.new_context()
    active = context.new_page()
    try:
        page.click("a.button:text-is('Console')")
        page.wait_for_selector("#status.connected", timeout=20000)
        # The idle user's pointer rests off the screen: a pointer left where the link was may
        # be over the screen once the page is laid out, and Chromium then reports it moving.
        page.mouse.move(1, 1)
        login(active, portal)
        active.goto(f"{portal.url}/vms/{portal.vm_id()}/console/")
        active.wait_for_selector("#status.connected", timeout=20000)
        wait_until(
            page, "document.querySelector('#status').textContent.includes('Idle: this console closes in')"
        )
        box = active.locator("#vnc-screen canvas").bounding_box()
        for step in range(16):  # 80 s of a user moving the mouse now and then
            active.mouse.move(box["x"] + 50 + step * 5, box["y"] + 50)
            active.wait_for_timeout(5000)
            if "idle too long" in page.inner_text("#status"):
                break
        assert "idle too long" in page.inner_text("#status")
        # still open (with a one-minute limit, the warning is always up: less than a minute left)
        assert "Disconnected" not in active.inner_text("#status")
    finally:
        portal.manage("globalconfig", "set", "console.idleTimeoutMinutes", "60")
        context.close()
