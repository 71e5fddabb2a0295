"""The serial console in Chromium (xterm.js over the portal's WebSocket, libvirt's console
stream behind it), on the real guest: commands, window size, one holder at a time, the VM
stopping."""

import re

import pytest

from bench.browser import wait_until
from console.errors import End
from tests.e2e.conftest import PASSWORD, login, virsh

pytestmark = [pytest.mark.browser, pytest.mark.hypervisor]

STATUS = "document.querySelector('#status').textContent"


def terminal_text(page) -> str:
    return page.inner_text(".xterm-rows")


def wait_for_text(page, pattern: str, timeout: float = 30) -> str:
    deadline = page.evaluate("Date.now()") + timeout * 1000
    while not re.search(pattern, text := terminal_text(page)):
        if page.evaluate("Date.now()") > deadline:
            # Where the keys went, and what the page says: the evidence for a next look.
            focus = page.evaluate("document.activeElement && document.activeElement.className")
            raise AssertionError(
                f"{pattern!r} never showed in the terminal (focus: {focus!r}, "
                f"status: {page.inner_text('#status')!r}):\n{text}"
            )
        page.wait_for_timeout(50)
    return text


def run(page, command: str, expect: str, timeout: float = 30) -> str:
    """Type a command at the guest's prompt and wait for its output."""
    page.click("#terminal")
    page.keyboard.type(command)
    page.keyboard.press("Enter")
    return wait_for_text(page, expect, timeout)


def wait_for_shell(page) -> None:
    """The guest boots in a few seconds; until its shell answers, Enter brings nothing."""
    page.wait_for_selector("#status.connected", timeout=20000)
    page.click("#terminal")
    deadline = page.evaluate("Date.now()") + 60000
    while "guest:" not in terminal_text(page):
        assert page.evaluate("Date.now()") < deadline, terminal_text(page)
        page.keyboard.press("Enter")
        page.wait_for_timeout(1000)


def open_serial(page, portal, user: str = "admin", password: str = PASSWORD) -> None:
    if user == "admin":
        login(page, portal)
    else:
        page.goto(f"{portal.url}/accounts/login/")
        page.fill("#id_username", user)
        page.fill("#id_password", password)
        page.click("button[type=submit]")
        page.wait_for_url(f"{portal.url}/")
    page.goto(f"{portal.url}/vms/{portal.vm_id()}/serial/")


def start_vm(portal) -> None:
    virsh("destroy", portal.vm_name)
    portal.manage("shell", "-c", _START.format(name=portal.vm_name))


_START = (
    "from console.models import VirtualMachine as V; from console.vms import vm_start; "
    "vm = V.objects.get(name='{name}'); vm_start(vm=vm, user=vm.owner)"
)


@pytest.fixture
def running_guest(portal):
    start_vm(portal)
    return portal


@pytest.fixture
def second_admin(portal):
    """Another staff user, who may open every VM's consoles."""
    portal.manage(
        "shell",
        "-c",
        "from django.contrib.auth.models import User; "
        f"u, _ = User.objects.get_or_create(username='ops', defaults={{'is_staff': True}}); "
        f"u.set_password('{PASSWORD}'); u.save()",
    )
    return "ops"


def test_serial_console_runs_commands_and_follows_the_window(page, running_guest):
    portal = running_guest
    open_serial(page, portal)
    page.wait_for_selector("#status.connected", timeout=20000)
    assert page.inner_text(".protocol") == "SERIAL"
    wait_for_shell(page)
    run(page, "uname -s", r"\nLinux")

    size = re.search(r"(\d+)×(\d+)", page.inner_text("#status"))
    cols, rows = int(size[1]), int(size[2])
    run(page, "stty size", rf"\n{rows} {cols}\b")
    page.set_viewport_size({"width": 700, "height": 420})
    wait_until(page, f"!{STATUS}.includes('{cols}×{rows}')")
    size = re.search(r"(\d+)×(\d+)", page.inner_text("#status"))
    new_cols, new_rows = int(size[1]), int(size[2])
    assert (new_cols, new_rows) != (cols, rows)
    page.keyboard.press("Enter")  # the next prompt asks the terminal its size
    run(page, "clear; stty size", rf"(^|\n){new_rows} {new_cols}\b")


def test_second_user_is_refused_with_the_holders_name_and_staff_take_over(
    browser, page, running_guest, second_admin
):
    portal = running_guest
    open_serial(page, portal)
    page.wait_for_selector("#status.connected", timeout=20000)

    context = browser.new_context()
    other = context.new_page()
    try:
        open_serial(other, portal, user=second_admin)
        wait_until(other, f"{STATUS}.includes('admin has the serial console open')")
        assert other.is_visible("#take-over")
        other.click("#take-over")
        other.wait_for_selector("#status.connected", timeout=20000)
        wait_until(page, f"{STATUS}.includes('ops took over the serial console')")
        assert "Disconnected" in page.inner_text("#status")
        records = portal.manage(
            "shell",
            "-c",
            "from console.models import ConsoleSession as S; "
            "rows = S.objects.filter(protocol='serial').order_by('pk'); "
            "print([(s.user.username, s.end_reason) for s in rows][-3:])",
        )
        assert "('admin', 'ops took over the serial console')" in records
        assert f"('ops', '{End.SERIAL_BUSY.reason}')" in records
    finally:
        context.close()


def test_vm_shutting_down_ends_the_session_with_its_reason(page, running_guest):
    portal = running_guest
    open_serial(page, portal)
    page.wait_for_selector("#status.connected", timeout=20000)
    deadline = page.evaluate("Date.now()") + 60000
    while "guest:" not in terminal_text(page):  # acpid must be up to power off on ACPI
        assert page.evaluate("Date.now()") < deadline, terminal_text(page)
        page.click("#terminal")
        page.keyboard.press("Enter")
        page.wait_for_timeout(1000)
    virsh("shutdown", portal.vm_name)
    wait_until(page, f"{STATUS}.includes('the VM stopped')", timeout=30)
    assert "shut off" in page.inner_text("#status")
    wait_for_text(page, r"serial console closed: the VM stopped", timeout=5)


def test_screen_reader_mode_holds_the_guests_text_and_is_remembered(page, running_guest):
    """xterm.js's screen reader mode: the guest's output is in the accessibility tree a screen
    reader reads; the toggle is remembered across visits."""
    portal = running_guest
    open_serial(page, portal)
    wait_for_shell(page)
    page.click("#screen-reader")
    assert page.get_attribute("#screen-reader", "aria-pressed") == "true"
    run(page, "echo reader-$((6*7))", "reader-42")
    wait_until(page, "document.querySelector('.xterm-accessibility-tree')?.textContent.includes('reader-42')")
    page.reload()
    page.wait_for_selector("#status.connected", timeout=20000)
    assert page.get_attribute("#screen-reader", "aria-pressed") == "true"
    assert page.locator(".xterm-accessibility-tree").count() == 1
