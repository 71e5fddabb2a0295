"""What the attack review did to the landed portal, done again: real clients against the real
proxy and a real QEMU running the demo guest, whose serial port says what reached its shell.

A watcher (a user a console is shared with) tries to type into the VM over VNC (an unknown
message queued before key events, RFB 3.3, messages that act on the VM) and over SPICE (an
inputs channel linked in two frames), tries to drop the owner (an exclusive ClientInit), and
to make the worker hold what it sends (a 2 GiB clipboard); two serial windows of one user race
staff for the serial console. Each time the owner, typing the same way, is the control: their
marker arrives, so the watcher's would have.
"""

from __future__ import annotations

import secrets
import struct
import threading
import time

import psutil
import pytest
from django.conf import settings
from websockets.exceptions import ConnectionClosed

from console.errors import End
from tests.e2e.conftest import PASSWORD
from tests.e2e.test_attacks import Browser
from tests.helpers import SerialReader, WsReader, rfb_client_handshake, spice_link

pytestmark = [pytest.mark.hypervisor]

# XT scancodes (set 1) of what the markers are made of.
SCANCODES = {
    **dict(zip("1234567890", range(0x02, 0x0C), strict=True)),
    **dict(zip("qwertyuiop", range(0x10, 0x1A), strict=True)),
    **dict(zip("asdfghjkl", range(0x1E, 0x27), strict=True)),
    **dict(zip("zxcvbnm", range(0x2C, 0x33), strict=True)),
    " ": 0x39,
    "\n": 0x1C,
    "/": 0x35,
    ".": 0x34,
}
SHIFTED = {">": ".", "S": "s"}
SHIFT = 0x2A


def key_presses(text: str) -> list[tuple[int, bool]]:
    """(scancode, down) for typing `text` on a US keyboard."""
    presses = []
    for char in text:
        if char in SHIFTED:
            code = SCANCODES[SHIFTED[char]]
            presses += [(SHIFT, True), (code, True), (code, False), (SHIFT, False)]
        else:
            presses += [(SCANCODES[char], True), (SCANCODES[char], False)]
    return presses


def qemu_keys(text: str) -> bytes:
    """QEMU's extended key events (what noVNC sends QEMU) typing `text`."""
    return b"".join(struct.pack(">BBHII", 255, 0, down, 0, code) for code, down in key_presses(text))


def std_keys(text: str) -> bytes:
    """Standard RFB key events (keysyms) typing `text`."""
    out = b""
    for char in text:
        keysym = 0xFF0D if char == "\n" else ord(char)
        out += struct.pack(">BBxxI", 4, 1, keysym) + struct.pack(">BBxxI", 4, 0, keysym)
    return out


def command(tag: str) -> tuple[str, bytes]:
    marker = f"{tag}{secrets.token_hex(4)}"
    return marker, f"echo {marker} > /dev/ttyS0\n".encode()


UPDATE_REQUEST = bytes([3, 1]) + struct.pack(">HHHH", 0, 0, 64, 64)
DESKTOP_SIZE = bytes([251, 0]) + struct.pack(">HHBx", 320, 200, 1) + bytes(16)
XVP_SHUTDOWN = bytes([250, 0, 1, 2])


@pytest.fixture(scope="module")
def watched(portal):
    """The demo VM running in `mode`, its owner (admin) and a user it is shared with."""
    portal.manage(
        "shell",
        "-c",
        "from django.contrib.auth.models import User; from console.models import VirtualMachine as V; "
        "from console.shares import console_share_create; "
        "u, _ = User.objects.get_or_create(username='peeker'); "
        f"u.set_password('{PASSWORD}'); u.save(); vm = V.objects.get(name='{portal.vm_name}'); "
        "vm.shares.filter(viewer=u).exists() or console_share_create(vm=vm, username='peeker', by=vm.owner)",
    )
    return portal


def running_in(portal, mode: str) -> tuple[Browser, Browser, SerialReader]:
    owner = Browser(portal)
    portal.manage("globalconfig", "set", "kvm.consoleMode", mode)
    state = owner.http.get(f"{portal.url}/vms/{owner.vm_id}/state/").json()["state"]
    owner.post(f"/vms/{owner.vm_id}/{'reboot' if state == 'running' else 'start'}/")
    reader = SerialReader(settings.LIBVIRT_URI, portal.vm_name)
    reader.wait_for_prompt()
    return owner, Browser(portal, "peeker"), reader


def closed_with(ws, timeout: float = 5) -> int | None:
    try:
        while True:
            ws.recv(timeout=timeout)
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else 1006
    except TimeoutError:
        return None


def open_vnc(browser: Browser, *, version: bytes = b"RFB 003.008\n", shared: int = 1, handshake: bool = True):
    ticket = browser.ticket()
    ws = browser.socket(ticket)
    reader = rfb_client_handshake(ws, version=version, shared=shared) if handshake else WsReader(ws)
    return ws, reader


def owner_types(owner: Browser, reader: SerialReader, tag: str) -> None:
    """The control: the owner's keys, sent the same way, reach the shell."""
    ws, _ = open_vnc(owner)
    for _ in range(3):  # the screen's shell starts a moment after the serial one
        marker, line = command(tag)
        ws.send(qemu_keys("\n" + line.decode()))
        try:
            reader.wait_for(marker.encode(), timeout=10)
            break
        except AssertionError:
            continue
    reader.wait_for(marker.encode(), timeout=1)
    ws.close()


def test_a_watchers_vnc_keys_never_reach_the_guest_however_they_are_sent(watched):
    owner, watcher, reader = running_in(watched, "vnc")
    try:
        markers = []
        # 1. An unknown message, then key events, in one frame: the console ends (4025), and
        #    nothing after the unknown message passes.
        marker, line = command("unknown")
        markers.append(marker)
        ws, _ = open_vnc(watcher)
        ws.send(bytes([7]) + qemu_keys(line.decode()))
        assert closed_with(ws) == End.PROTOCOL_VIOLATION
        # 2. RFB 3.3: a 16-byte "DES response" that starts like a security type, then keys.
        marker, line = command("rfbthreethree")
        markers.append(marker)
        ticket = watcher.ticket()
        ws = watcher.socket(ticket)
        wire = WsReader(ws)
        assert wire.read(12) == b"RFB 003.008\n"
        ws.send(b"RFB 003.003\n")
        assert wire.read(4) == struct.pack(">I", 1)  # None: the proxy has the password
        ws.send(bytes([2]) + bytes(15) + bytes([1]) + std_keys(line.decode()) + qemu_keys(line.decode()))
        ws.send(UPDATE_REQUEST)
        time.sleep(1)
        ws.close()
        # 3. What acts on the VM, each kind: extended and standard keys, the screen's size,
        #    xvp's shutdown: dropped, and the console stays open.
        marker, line = command("allowlist")
        markers.append(marker)
        ws, wire = open_vnc(watcher)
        keys = std_keys(line.decode()) + qemu_keys(line.decode())
        ws.send(DESKTOP_SIZE + XVP_SHUTDOWN + keys + UPDATE_REQUEST)
        assert wire.read(1, timeout=10) == b"\x00"  # a FramebufferUpdate: still served
        ws.close()

        owner_types(owner, reader, "owner")
        for marker in markers:
            assert marker.encode() not in reader.output, marker
        state = owner.http.get(f"{watched.url}/vms/{owner.vm_id}/state/").json()["state"]
        assert state == "running"  # xvp's shutdown never reached QEMU
    finally:
        reader.close()


def test_a_watchers_exclusive_client_init_drops_nobody(watched):
    owner, watcher, reader = running_in(watched, "vnc")
    try:
        owners_ws, owners_wire = open_vnc(owner)
        watchers_ws, watchers_wire = open_vnc(watcher, shared=0)  # "exclusive"
        watchers_ws.send(UPDATE_REQUEST)
        assert watchers_wire.read(1, timeout=10) == b"\x00"
        owners_ws.send(UPDATE_REQUEST)
        assert owners_wire.read(1, timeout=10) == b"\x00"  # the owner is still served
        marker, line = command("stillhere")
        owners_ws.send(qemu_keys("\n" + line.decode()))
        reader.wait_for(marker.encode(), timeout=20)
        watchers_ws.close()
        owners_ws.close()
    finally:
        reader.close()


def test_a_huge_clipboard_ends_the_console_and_the_worker_holds_none_of_it(watched):
    owner, _, reader = running_in(watched, "vnc")
    reader.close()
    worker = psutil.Process(watched.processes[0].pid)
    ws, _ = open_vnc(owner)
    before = worker.memory_info().rss
    ws.send(bytes([6, 0, 0, 0]) + struct.pack(">I", 2**31 - 1))  # announces 2 GiB
    chunk = bytes(1 << 20)
    sent = 0
    try:
        for _ in range(64):
            ws.send(chunk)
            sent += len(chunk)
    except ConnectionClosed:
        pass
    assert closed_with(ws) == End.PROTOCOL_VIOLATION
    growth = worker.memory_info().rss - before
    assert growth < 16 << 20, f"the worker grew by {growth >> 20} MiB for {sent >> 20} MiB sent"


@pytest.mark.browser
def test_a_watchers_spice_inputs_channel_is_refused_even_linked_in_two_frames(watched, page):
    """The watcher's link for the inputs channel, split over two frames, is refused (4024)
    before QEMU sees it. The control is the owner's spice-html5 page typing in Chromium."""
    from tests.e2e.conftest import login, wait_for_canvas
    from tests.e2e.test_browser_console import CANVAS, type_keys

    owner, watcher, reader = running_in(watched, "spice")
    try:
        marker, line = command("spicewatcher")
        ticket = watcher.ticket()
        ws = watcher.socket(ticket)
        link = spice_link(3)
        ws.send(link[:21])
        ws.send(link[21:])
        key_downs = [struct.pack("<HII", 101, 4, code) for code, down in key_presses(line.decode()) if down]
        ws.send(b"".join(key_downs))
        assert closed_with(ws) == End.VIEW_ONLY

        login(page, watched)
        page.goto(f"{watched.url}/vms/{owner.vm_id}/console/")
        page.wait_for_selector("#status.connected", timeout=20000)
        wait_for_canvas(page, CANVAS["spice"], lambda s: s["colours"] >= 2 and s["lit"] > 200)
        page.click(CANVAS["spice"])
        for _ in range(3):  # the screen's shell starts a moment after the serial one
            marker_owner, line_owner = command("spiceowner")
            type_keys(page, line_owner.decode())
            try:
                reader.wait_for(marker_owner.encode(), timeout=10)
                break
            except AssertionError:
                continue
        reader.wait_for(marker_owner.encode(), timeout=1)
        assert marker.encode() not in reader.output
    finally:
        reader.close()


def test_two_serial_windows_of_one_user_at_once_never_take_the_console_from_staff(watched):
    """The holder is the session that opened the console; a window still opening is none."""
    watched.manage(
        "shell",
        "-c",
        "from django.contrib.auth.models import User; "
        "u, _ = User.objects.get_or_create(username='ops', defaults={'is_staff': True}); "
        f"u.is_staff = True; u.set_password('{PASSWORD}'); u.save()",
    )
    owner, _, reader = running_in(watched, "vnc")
    reader.close()  # the tests' own witness holds the console otherwise
    staff = Browser(watched, "ops")
    staff.vm_id = owner.vm_id
    held = staff.ticket("serial/ticket/")
    holder = staff.socket(held)
    holder.send(b"\r")
    holder.recv(timeout=10)  # output: ops holds the serial console
    results: dict[int, tuple[int | None, str]] = {}

    def window(n: int) -> None:
        ticket = owner.ticket("serial/ticket/")
        with owner.socket(ticket) as ws:
            reason = ""
            try:
                while True:
                    message = ws.recv(timeout=10)
                    if isinstance(message, str):
                        reason = message
            except ConnectionClosed as closed:
                results[n] = (closed.rcvd.code if closed.rcvd else None, reason)
            except TimeoutError:
                results[n] = (None, reason)

    windows = [threading.Thread(target=window, args=(n,)) for n in range(2)]
    for thread in windows:
        thread.start()
    for thread in windows:
        thread.join(20)
    assert [code for code, _ in results.values()] == [End.SERIAL_BUSY, End.SERIAL_BUSY], results
    assert all("ops has the serial console open" in reason for _, reason in results.values())
    holder.send(b"\r")
    assert holder.recv(timeout=10)  # ops still holds it
    holder.close()
