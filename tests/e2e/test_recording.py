"""Recording in Chromium, on the real guest: a VNC console and a serial console recorded while a
marker is typed, then played back in the browser (the screen the user saw, the text the guest
printed); a worker killed mid-recording leaves a recording that plays; SPICE channels recorded."""

from __future__ import annotations

import json
import os
import secrets
import signal
import time

import pytest
from django.conf import settings

from bench.browser import wait_until
from tests.e2e.conftest import login, wait_for_canvas
from tests.e2e.test_attacks import Browser
from tests.e2e.test_browser_console import CANVAS, start_vm_in_mode, type_a_marker
from tests.e2e.test_serial_console import open_serial, run, wait_for_shell
from tests.helpers import SerialReader, rfb_client_handshake

pytestmark = [pytest.mark.browser, pytest.mark.hypervisor]

# A 48 x 30 grey-level thumbnail of a canvas: enough to tell two screens apart, blind to a
# cursor's blink.
THUMBNAIL = """(selector) => {
  const source = document.querySelector(selector);
  const small = document.createElement("canvas");
  small.width = 48; small.height = 30;
  const context = small.getContext("2d");
  context.drawImage(source, 0, 0, 48, 30);
  const data = context.getImageData(0, 0, 48, 30).data;
  const grey = [];
  for (let i = 0; i < data.length; i += 4) grey.push((data[i] + data[i + 1] + data[i + 2]) / 3);
  return grey;
}"""


@pytest.fixture
def recording_on(portal):
    portal.manage("globalconfig", "set", "console.recording", "all")
    yield
    portal.manage("globalconfig", "set", "console.recording", "off")


def latest_recording(portal, **filters) -> dict:
    """The newest recording (ended), as the index says."""
    query = ", ".join(f"{k}={v!r}" for k, v in filters.items())
    deadline = time.monotonic() + 15
    while True:
        out = portal.manage(
            "shell",
            "-c",
            "from console.models import ConsoleRecording as R; import json; "
            f"r = R.objects.filter({query}).order_by('-id').first(); "
            "print(json.dumps(r and {'id': r.pk, 'ended': bool(r.ended_at), 'bytes': r.bytes, "
            "'channel': r.channel, 'path': r.path}))",
        )
        found = json.loads(out.strip().splitlines()[-1])
        if found and found["ended"]:
            return found
        if time.monotonic() > deadline:
            listing = portal.manage(
                "shell",
                "-c",
                "from console.models import ConsoleRecording as R; "
                "print(list(R.objects.values_list('id', 'protocol', 'channel', 'ended_at', 'note')))",
            )
            raise AssertionError(f"no ended recording {filters}: {found}; all: {listing}")
        time.sleep(0.3)


def similar(a: list[float], b: list[float]) -> float:
    """The share of thumbnail cells within 24 grey levels of each other."""
    return sum(abs(x - y) <= 24 for x, y in zip(a, b, strict=True)) / len(a)


def type_into_a_recorded_console(page, portal, mode: str) -> list[float]:
    """Open the VM's console in `mode` (it says RECORDED before it connects), type a marker
    into the guest's shell, and leave (which ends the session and its recordings): the screen
    the user saw last, as a thumbnail."""
    start_vm_in_mode(page, portal, mode)
    page.click("a.button:text-is('Console')")
    page.wait_for_selector("#status.connected", timeout=20000)
    assert "RECORDED" in page.inner_text("#recording-notice")
    wait_for_canvas(page, CANVAS[mode], lambda s: s["colours"] >= 2 and s["lit"] > 200)
    reader = SerialReader(settings.LIBVIRT_URI, portal.vm_name)
    try:
        reader.wait_for_prompt()
        type_a_marker(page, CANVAS[mode], reader, f"{mode}rec")
    finally:
        reader.close()
    page.wait_for_timeout(1500)  # the echo's screen update arrives
    live = page.evaluate(THUMBNAIL, CANVAS[mode])
    page.goto(f"{portal.url}/")
    return live


def test_a_recorded_vnc_console_plays_back_the_screen_the_user_saw(page, browser, portal, recording_on):
    live = type_into_a_recorded_console(page, portal, "vnc")
    recording = latest_recording(portal, protocol="vnc")
    assert recording["bytes"] > 10_000

    player = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
    try:
        login(player, portal)
        player.goto(f"{portal.url}/recordings/{recording['id']}/")
        wait_until(player, "document.querySelector('#status').textContent.startsWith('Ready')")
        player.evaluate("window.replay.seek(1e9)")
        wait_for_canvas(player, CANVAS["vnc"], lambda s: s["colours"] >= 2 and s["lit"] > 200)
        replayed = player.evaluate(THUMBNAIL, CANVAS["vnc"])
        assert similar(live, replayed) > 0.95, "the played-back screen is not the one the user saw"
        blank = [0.0] * len(live)
        assert similar(replayed, blank) < 0.95  # and it is no empty screen
    finally:
        player.context.close()


def test_a_recorded_serial_console_plays_back_with_its_text(page, portal, recording_on):
    from tests.e2e.test_serial_console import start_vm

    start_vm(portal)
    open_serial(page, portal)
    wait_for_shell(page)
    marker = f"serial-{secrets.token_hex(4)}"
    run(page, f"echo {marker}", marker)
    page.goto(f"{portal.url}/")
    recording = latest_recording(portal, protocol="serial")
    assert recording["path"].endswith(".cast")
    page.goto(f"{portal.url}/recordings/{recording['id']}/")
    wait_until(page, "document.querySelector('#status').textContent.startsWith('Ready')")
    assert marker in page.evaluate("window.replayText()")
    page.evaluate("window.replay.seek(1e9)")
    wait_until(page, f"document.querySelector('.xterm-rows').innerText.includes('{marker}')")
    page.fill("#search", marker)
    page.press("#search", "Enter")
    wait_until(page, "document.querySelector('#found').textContent.startsWith('found at')")


def test_a_worker_killed_mid_recording_leaves_a_recording_that_plays(page, portal, recording_on):
    portal.manage("globalconfig", "set", "kvm.consoleMode", "vnc")
    Browser(portal).running_vm()
    doomed = portal.daphne("daphne-killed")
    browser = Browser(doomed)
    with browser.socket(browser.ticket()) as ws:
        wire = rfb_client_handshake(ws)
        ws.send(bytes([3, 0]) + (0).to_bytes(4, "big") + (640).to_bytes(2, "big") + (400).to_bytes(2, "big"))
        wire.read(4, timeout=10)  # a screen update is on its way: recorded as it went
        time.sleep(0.5)
        os.kill(doomed.processes[-1].pid, signal.SIGKILL)
    out = portal.manage(
        "shell",
        "-c",
        "from console.models import ConsoleRecording as R; from console.recordings import recording_file, "
        "stream_records; r = R.objects.filter(protocol='vnc').order_by('-id').first(); "
        "h, records = stream_records(recording_file(r).read_bytes()); "
        "print(r.pk, r.ended_at is None, len(records))",
    )
    recording_id, unended, count = out.strip().splitlines()[-1].split()
    assert unended == "True" and int(count) >= 3  # the proxy's greeting on: everything until the kill
    login(page, portal)
    page.goto(f"{portal.url}/recordings/{recording_id}/")
    wait_until(page, "document.querySelector('#status').textContent.startsWith('Ready')")


def test_a_spice_console_is_recorded_channel_by_channel_and_plays_back_in_spice_html5(
    page, browser, portal, recording_on
):
    live = type_into_a_recorded_console(page, portal, "spice")
    display = latest_recording(portal, protocol="spice", channel="display")
    main = latest_recording(portal, protocol="spice", channel="main")
    # The screen, as the client got it (SPICE's compression keeps a text console to a few KiB).
    assert display["bytes"] > 2_000
    assert main["id"] != display["id"] and main["bytes"] > 0

    # Played back by the replay endpoint acting as the SPICE server, channel by channel: the
    # screen the user saw last.
    player = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
    try:
        login(player, portal)
        player.goto(f"{portal.url}/recordings/{display['id']}/")
        player.select_option("#speed", "0")
        wait_for_canvas(player, CANVAS["spice"], lambda s: s["colours"] >= 2 and s["lit"] > 200)
        wait_until(player, "document.querySelector('#status').textContent === 'End of the recording'")
        replayed = player.evaluate(THUMBNAIL, CANVAS["spice"])
        assert similar(live, replayed) > 0.95, "the played-back screen is not the one the user saw"
        played = portal.manage(
            "shell",
            "-c",
            "from console.models import RecordingPlayback as P; "
            f"print(P.objects.filter(recording_id={display['id']}).count())",
        )
        assert int(played.strip().splitlines()[-1]) >= 1  # the playback was audited
    finally:
        player.context.close()
