"""virt-viewer's remote-viewer opening a downloaded .vv, directly and through the SPICE proxy."""

import shutil
import subprocess
import time
from datetime import datetime, timezone

import pytest

from tests.e2e.conftest import ARTIFACTS
from tests.e2e.test_browser_console import start_vm_in_mode

pytestmark = [pytest.mark.browser, pytest.mark.hypervisor, pytest.mark.viewer]


def download_vv(page, tmp_path):
    with page.expect_download() as download:
        page.click("button:has-text('Download .vv')")
    path = tmp_path / download.value.suggested_filename
    download.value.save_as(path)
    return path


def screen_stats(display, name):
    """Dark pixels (a VM console is black) and light pixels inside them (its text)."""
    png = ARTIFACTS / f"{name}.png"
    xwd = subprocess.run(
        ["xwd", "-root", "-silent", "-display", display], capture_output=True, check=True
    ).stdout
    subprocess.run(["convert", "xwd:-", str(png)], input=xwd, check=True)
    raw = subprocess.run(["convert", "xwd:-", "rgb:-"], input=xwd, capture_output=True, check=True).stdout
    dark = sum(1 for i in range(0, len(raw), 3) if raw[i] + raw[i + 1] + raw[i + 2] < 40)
    return dark, png


def run_viewer(vv_path, display, name, *, expect_screen: bool, timeout=15):
    """Open the .vv in remote-viewer; returns the screen's dark-pixel count once settled."""
    viewer = subprocess.Popen(
        ["remote-viewer", str(vv_path)],
        env={"DISPLAY": display, "PATH": "/usr/bin:/bin", "HOME": "/tmp"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            time.sleep(1)
            dark, png = screen_stats(display, name)
            if (dark > 200_000) == expect_screen or time.monotonic() > deadline:
                return dark, png
    finally:
        viewer.terminate()
        viewer.wait(10)


@pytest.mark.parametrize("through_proxy", [False, True], ids=["direct", "spice-proxy"])
def test_remote_viewer_shows_the_vm_then_the_password_expires(
    page, portal, spiceproxy_portal, xvfb, tmp_path, through_proxy
):
    target = spiceproxy_portal if through_proxy else portal
    start_vm_in_mode(page, target, "spice")
    vv = download_vv(page, tmp_path)
    text = vv.read_text()
    assert ("proxy=" in text) == through_proxy
    issued_at = datetime.now(timezone.utc)
    again = tmp_path / "again.vv"
    shutil.copy(vv, again)  # remote-viewer deletes the file it opens (delete-this-file=1)

    name = f"remote-viewer-{'proxy' if through_proxy else 'direct'}"
    dark, png = run_viewer(vv, xvfb, name, expect_screen=True)
    assert dark > 200_000, f"remote-viewer did not show the VM's screen (see {png})"
    assert not vv.exists()

    # The password was valid for VV_PASSWORD_SECONDS (10 s in these tests); then it is refused.
    time.sleep(max(0.0, 11 - (datetime.now(timezone.utc) - issued_at).total_seconds()))
    dark, png = run_viewer(again, xvfb, name + "-expired", expect_screen=False, timeout=6)
    assert dark < 50_000, f"an expired .vv still opened the console (see {png})"
