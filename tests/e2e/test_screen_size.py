"""In Chromium, on the real guest: "Resize VM to window" sizes the VM's screen to the page's
(VNC's SetDesktopSize to a virtio-gpu display, which the desktop kernel's console follows), and
says why not where the VM cannot follow."""

import tempfile
import time
from pathlib import Path

import pytest
from django.conf import settings
from PIL import Image

from bench.browser import wait_until
from tests.e2e.conftest import login, virsh
from tests.e2e.test_browser_console import start_vm_in_mode
from tests.helpers import SerialReader

pytestmark = [pytest.mark.browser, pytest.mark.hypervisor]

SCREEN_AREA = "(s => [s.clientWidth, s.clientHeight])(document.querySelector('#vnc-screen'))"
CANVAS_FITS = """(() => {{
  const canvas = document.querySelector('#vnc-screen canvas');
  return canvas.height === {height} && canvas.width >= {width} && canvas.width - {width} < 16;
}})()"""


@pytest.fixture
def desktop_vm(portal):
    """A VNC VM with the virtio video model, booting the demo guest's desktop kernel."""
    name = f"{portal.vm_name}-desk"
    vm_id = int(
        portal.manage(
            "shell",
            "-c",
            "from console.models import VirtualMachine as V; from console.vms import demo_guest_boot; "
            f"demo = V.objects.get(name='{portal.vm_name}'); "
            f"boot = {{**demo_guest_boot(), 'kernel': '{settings.GUEST_DIR}/vmlinuz-desktop'}}; "
            f"print(V.objects.create(name='{name}', owner=demo.owner, host=demo.host, "
            "console_mode='vnc', video='virtio', **boot).pk)",
        )
        .strip()
        .splitlines()[-1]
    )
    yield vm_id, name
    virsh("destroy", name)
    virsh("undefine", name)
    remove = f"from console.models import VirtualMachine as V; V.objects.filter(pk={vm_id}).delete()"
    portal.manage("shell", "-c", remove)


def guest_screen(name: str) -> tuple[int, int]:
    """The size of the guest's screen, as QEMU has it (libvirt's screenshot)."""
    with tempfile.TemporaryDirectory() as tmp:
        shot = Path(tmp) / "screen.png"
        done = virsh("screenshot", name, str(shot))
        assert done.returncode == 0, done.stderr
        with Image.open(shot) as image:
            return image.size


def wait_for_guest_screen(name: str, size: tuple[int, int], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while (seen := guest_screen(name)) != size:
        if time.monotonic() > deadline:
            raise AssertionError(f"the guest's screen stayed {seen}, not the window's {size}")
        time.sleep(0.2)


def test_the_vms_screen_takes_the_windows_size_and_follows_it(page, portal, desktop_vm):
    vm_id, name = desktop_vm
    login(page, portal)
    page.goto(f"{portal.url}/vms/{vm_id}/")
    page.wait_for_selector("h1 .state")
    page.click("button:has-text('Start')")
    page.wait_for_selector(".messages >> text=console")
    reader = SerialReader(settings.LIBVIRT_URI, name)
    try:
        reader.wait_for_prompt()  # the guest's virtio-gpu driver is loaded
        page.goto(f"{portal.url}/vms/{vm_id}/console/")
        page.wait_for_selector("#status.connected", timeout=20000)
        assert page.get_attribute("#fit", "aria-pressed") == "true"
        assert page.get_attribute("#fit", "aria-disabled") == "false"
        for viewport in ({"width": 1280, "height": 800}, {"width": 1000, "height": 640}):
            page.set_viewport_size(viewport)
            page.wait_for_timeout(300)  # the toolbar settles (it wraps on narrow windows)
            width, height = page.evaluate(SCREEN_AREA)
            wait_for_guest_screen(name, (width, height))
            # noVNC draws what QEMU sends: the guest's screen (QEMU's VNC server pads the width
            # to 16 pixels).
            wait_until(page, CANVAS_FITS.format(width=width, height=height))
            # The guest's own console took the size: its rows and columns of 8x16 characters.
            mark = len(reader.output)
            reader.write(b"stty size < /dev/tty1\r")
            reader.wait_for(f"{height // 16} {width // 8}\r\n".encode())
            assert len(reader.output) > mark
        # Turned off, the VM keeps its size whatever the window does, and the page remembers.
        page.click("#fit")
        assert page.get_attribute("#fit", "aria-pressed") == "false"
        kept = guest_screen(name)
        page.set_viewport_size({"width": 1280, "height": 800})
        page.wait_for_timeout(1500)
        assert guest_screen(name) == kept
        page.reload()
        page.wait_for_selector("#status.connected", timeout=20000)
        assert page.get_attribute("#fit", "aria-pressed") == "false"
        page.wait_for_timeout(1000)
        assert guest_screen(name) == kept
    finally:
        reader.close()


def test_a_vm_that_cannot_follow_the_window_says_why(page, portal):
    """The demo VM has the standard VGA display: the button says what would make it work."""
    start_vm_in_mode(page, portal, "vnc")
    page.click("a.button:text-is('Console')")
    page.wait_for_selector("#status.connected", timeout=20000)
    assert page.get_attribute("#fit", "aria-disabled") == "true"
    assert page.get_attribute("#fit", "aria-pressed") == "false"
    page.click("#fit", force=True)  # Playwright waits for an aria-disabled button; a user need not
    assert "virtio video model" in page.inner_text("#status")
    assert "Scale to window" in page.inner_text("#status")
