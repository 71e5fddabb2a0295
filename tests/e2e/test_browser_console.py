"""In a real browser, on the real stack: see the VM's screen and type into it, over SPICE and VNC."""

import secrets

import pytest
from django.conf import settings

from bench.browser import wait_until
from tests.e2e.conftest import ARTIFACTS, login, virsh, wait_for_canvas
from tests.helpers import SerialReader

pytestmark = [pytest.mark.browser, pytest.mark.hypervisor]

CANVAS = {"spice": "#spice-screen canvas", "vnc": "#vnc-screen canvas"}


def start_vm_in_mode(page, portal, mode: str) -> None:
    """As an admin would: set kvm.consoleMode, then start (or reboot) the VM from its page."""
    portal.manage("globalconfig", "set", "kvm.consoleMode", mode)
    login(page, portal)
    # Straight to the VM's page ("text=" on the list can match other VMs named after it, and a
    # click on a list still loading can stay there, whose own Reboot buttons then answer).
    page.goto(f"{portal.url}/vms/{portal.vm_id()}/")
    page.wait_for_selector("h1 .state")  # loaded: its buttons say what the VM can do
    if page.locator("button:has-text('Reboot')").count():
        page.click("button:has-text('Reboot')")
    else:
        page.click("button:has-text('Start')")
    page.wait_for_selector(".messages >> text=console")
    assert f"{mode.upper()} console" in page.inner_text(".messages")


def open_console_and_press_escape(page, portal, mode: str) -> None:
    page.click("a.button:text-is('Console')")
    page.wait_for_selector("#status.connected", timeout=20000)
    assert page.inner_text(".protocol") == mode.upper()
    selector = CANVAS[mode]
    # SeaBIOS's banner: light text on black, so several colours and some lit pixels.
    before = wait_for_canvas(page, selector, lambda s: s["colours"] >= 2 and s["lit"] > 200)
    page.click(selector)
    page.keyboard.press("Escape")
    # "Select boot device:" and the device list add lines of text.
    after = wait_for_canvas(page, selector, lambda s: s["lit"] > before["lit"] * 1.2)
    assert after["lit"] > before["lit"]


# US layout: the characters a user types with Shift, as the key they press with it.
SHIFTED = {">": "Period", "<": "Comma", "|": "Backslash", "_": "Minus", ":": "Semicolon", '"': "Quote"}


def type_keys(page, text: str) -> None:
    """Type as a user does, pressing Shift for shifted characters (so the client sends the
    Shift key too, as a keyboard would)."""
    for char in text:
        if char in SHIFTED:
            page.keyboard.press(f"Shift+{SHIFTED[char]}")
        elif "A" <= char <= "Z":
            page.keyboard.press(f"Shift+Key{char}")
        elif char == "\n":
            page.keyboard.press("Enter")
        else:
            page.keyboard.type(char)


def type_a_marker(page, selector: str, reader: SerialReader, prefix: str) -> str:
    """Type `echo <marker> > /dev/ttyS0` into the console on the page until the guest's serial
    port prints the marker (the screen's shell starts a moment after the serial one); returns
    the marker."""
    page.click(selector)
    for _ in range(3):
        marker = f"{prefix}-{secrets.token_hex(4)}"
        type_keys(page, f"echo {marker} > /dev/ttyS0\n")
        try:
            reader.wait_for(marker.encode(), timeout=10)
            return marker
        except AssertionError:
            continue
    tail = bytes(reader.output[-300:])
    raise AssertionError(f"keys typed in the browser never reached the guest: {tail!r}")


def open_console_and_type_a_command(page, portal, mode: str, host=None) -> None:
    """Open the console, see the guest's screen, and type a shell command that writes a random
    marker to the serial port; the marker read back through libvirt proves the keys reached
    the guest's OS."""
    page.click("a.button:text-is('Console')")
    page.wait_for_selector("#status.connected", timeout=20000)
    assert page.inner_text(".protocol") == mode.upper()
    selector = CANVAS[mode]
    wait_for_canvas(page, selector, lambda s: s["colours"] >= 2 and s["lit"] > 200)  # boot text
    reader = SerialReader(host or settings.LIBVIRT_URI, portal.vm_name)
    try:
        reader.wait_for_prompt()
        type_a_marker(page, selector, reader, "typed")
    finally:
        reader.close()


def console_round_trip(page, portal, mode: str, log_name: str) -> tuple[list[str], str]:
    """Start the VM in `mode`, see its screen, type into it; returns the page's WebSocket URLs
    and the server log, after checking that no ticket reached that log."""
    sockets = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    start_vm_in_mode(page, portal, mode)
    open_console_and_type_a_command(page, portal, mode)
    log = (ARTIFACTS / log_name).read_text()
    assert sockets and not any(url.split("token=")[1] in log for url in sockets)  # tickets stay out of logs
    return sockets, log


@pytest.mark.parametrize("mode", ["spice", "vnc"])
def test_console_shows_the_screen_and_takes_keys(page, portal, mode):
    console_round_trip(page, portal, mode, "daphne.log")


def test_vm_shut_down_mid_session_is_explained(page, portal):
    start_vm_in_mode(page, portal, "vnc")
    page.click("a.button:text-is('Console')")
    page.wait_for_selector("#status.connected", timeout=20000)
    virsh("destroy", portal.vm_name)
    wait_until(page, "document.querySelector('#status').textContent.includes('shut off')")
    assert "Start it from its page" in page.inner_text("#status")
    page.click("#reconnect")
    wait_until(page, "document.querySelector('#status').textContent.includes('Cannot reconnect')")
    assert "start it" in page.inner_text("#status")


def test_console_of_a_stopped_vm_offers_start(page, portal):
    portal.manage("globalconfig", "set", "kvm.consoleMode", "vnc")
    virsh("destroy", portal.vm_name)
    login(page, portal)
    page.goto(f"{portal.url}/vms/{portal.vm_id()}/console/")
    assert "start it to open its console" in page.inner_text("#console-unavailable")
    page.click("button:has-text('open its console')")
    page.wait_for_selector("#status.connected", timeout=20000)
    wait_for_canvas(page, CANVAS["vnc"], lambda s: s["colours"] >= 2)


def test_reconnect_gets_a_fresh_ticket(page, portal):
    tickets = []
    page.on("response", lambda r: tickets.append(r) if r.url.endswith("/console/ticket/") else None)
    start_vm_in_mode(page, portal, "spice")
    page.click("a.button:text-is('Console')")
    page.wait_for_selector("#status.connected", timeout=20000)
    with page.expect_response(lambda r: r.url.endswith("/console/ticket/")):
        page.click("#reconnect")
    assert [r.status for r in tickets] == [200, 200]
    assert tickets[0].json()["token"] != tickets[1].json()["token"]
    page.wait_for_selector("#status.connected", timeout=20000)
    wait_for_canvas(page, CANVAS["spice"], lambda s: s["colours"] >= 2 and s["lit"] > 200)


@pytest.mark.parametrize("mode", ["spice", "vnc"])
def test_console_on_uvicorn(page, uvicorn_portal, mode):
    _, log = console_round_trip(page, uvicorn_portal, mode, "uvicorn.log")
    assert "token=[redacted]" in log  # uvicorn logs WebSocket targets with their query string


@pytest.mark.parametrize("mode", ["spice", "vnc"])
def test_type_text_types_shifted_characters_exactly(page, portal, mode):
    """The toolbar's "Type text" (a password into a login prompt, say): every character,
    shifted ones included, reaches the guest's shell as typed; read back from the serial port."""
    start_vm_in_mode(page, portal, mode)
    page.click("a.button:text-is('Console')")
    page.wait_for_selector("#status.connected", timeout=20000)
    wait_for_canvas(page, CANVAS[mode], lambda s: s["colours"] >= 2 and s["lit"] > 200)
    reader = SerialReader(settings.LIBVIRT_URI, portal.vm_name)
    try:
        reader.wait_for_prompt()
        text = f'Typed-{secrets.token_hex(3)}-!@#$%^&*()_+{{}}|:"<>?~`[]\\;,./=Z'
        for _ in range(3):  # the screen's shell starts a moment after the serial one
            page.fill("#type-text-input", f"echo '{text}' > /dev/ttyS0")  # and Enter, ticked
            page.click("#type-text button")
            try:
                reader.wait_for(f"\n{text}\r".encode(), timeout=10)
                break
            except AssertionError:
                continue
        else:
            raise AssertionError(f"typed text never arrived intact: {bytes(reader.output[-300:])!r}")
    finally:
        reader.close()
    assert page.input_value("#type-text-input") == ""  # not kept in the page


@pytest.fixture
def german_keyboard(portal):
    """The demo guest set up for a German keyboard (kbd's de-latin1 keymap, and the VM's layout
    in the portal); powered off and back to US after."""
    setting = (
        "from console.models import VirtualMachine as V; vm = V.objects.get(name='{name}'); "
        "vm.kernel_cmdline = vm.kernel_cmdline.replace(' keymap=de', '') + '{keymap}'; "
        "vm.keyboard_layout = '{layout}'; vm.save()"
    )
    portal.manage("shell", "-c", setting.format(name=portal.vm_name, keymap=" keymap=de", layout="de"))
    yield
    portal.manage("shell", "-c", setting.format(name=portal.vm_name, keymap="", layout=""))
    portal.manage(
        "shell",
        "-c",
        "from console.hypervisor import hypervisor_for; from console.models import VirtualMachine as V; "
        f"vm = V.objects.get(name='{portal.vm_name}'); hypervisor_for(vm.host).destroy(vm.name)",
    )


def test_type_text_types_german_with_altgr_and_dead_keys(page, portal, german_keyboard):
    """Type text in the guest's layout: AltGr (@ | { } [ ] \\), dead keys (é ô) and umlauts reach
    a guest with a German keyboard byte for byte (read back from its serial port)."""
    start_vm_in_mode(page, portal, "vnc")
    page.click("a.button:text-is('Console')")
    page.wait_for_selector("#status.connected", timeout=20000)
    assert page.input_value("#type-text-layout") == "de"  # the VM's layout, chosen for the user
    reader = SerialReader(settings.LIBVIRT_URI, portal.vm_name)
    try:
        reader.wait_for_prompt()
        reader.wait_for(b"guest:~# ")
        text = f"Grüße-{secrets.token_hex(3)}: é@ß ä|{{[]}}\\ ÄÖÜ ô <>"
        page.fill("#type-text-input", f"echo '{text}' > /dev/ttyS0")  # and Enter, ticked
        page.click("#type-text button")
        reader.wait_for(f"{text}\r\n".encode(), timeout=20)
        # A character the layout lacks: nothing typed, and the page says which.
        page.fill("#type-text-input", "Ça")
        page.click("#type-text button")
        wait_until(page, "document.querySelector('#status').textContent.includes(\"cannot type 'Ç'\")")
    finally:
        reader.close()


def test_the_spice_page_opens_the_playback_channel_and_reports_the_sound(page, portal):
    start_vm_in_mode(page, portal, "spice")
    page.click("a.button:text-is('Console')")
    page.wait_for_selector("#status.connected", timeout=20000)
    # The VM has a sound card played through SPICE: the page links its playback channel.
    wait_until(page, "document.querySelector('#audio-state').dataset.state === 'ready'")
    assert page.inner_text("#audio-state") == "Sound: on (nothing playing)"
    # No agent in the demo guest: its screen cannot follow the window, and the page says so.
    assert page.get_attribute("#fit", "aria-disabled") == "true"
    assert "spice-vdagent" in page.get_attribute("#fit", "title")
    page.click("#sound")
    assert page.get_attribute("#sound", "aria-pressed") == "false"
    assert page.inner_text("#audio-state") == "Sound: muted"


def test_the_vnc_clipboard_panel_follows_the_policy(page, portal):
    """The panel says which ways console.clipboard allows, and offers Send only when the VM may
    receive (the proxy and the VM enforce it; see test_consumer for the protocol level)."""
    start_vm_in_mode(page, portal, "vnc")
    try:
        for policy, words, can_send in (("from-vm", "from the VM only", False), ("both", "both ways", True)):
            portal.manage("globalconfig", "set", "console.clipboard", policy)
            page.goto(f"{portal.url}/vms/{portal.vm_id()}/console/")
            page.wait_for_selector("#status.connected", timeout=20000)
            page.click("#clipboard")
            assert words in page.inner_text("#clipboard-policy")
            assert page.is_enabled("#clipboard-send") == can_send
    finally:
        portal.manage("globalconfig", "set", "console.clipboard", "both")


STATIC_FETCHED = """() => {
  const files = performance.getEntriesByType("resource").filter((e) => e.name.includes("/static/"));
  return {used: files.length, fetched: files.filter((e) => e.transferSize > 0).map((e) => e.name)};
}"""


@pytest.mark.parametrize("mode", ["spice", "vnc"])
def test_a_console_page_opened_again_fetches_no_static_file(page, portal, mode):
    """The client, its stylesheet and scripts carry hashed names served as immutable: opened a
    second time, the page takes them all from the browser's cache, without even revalidating."""
    start_vm_in_mode(page, portal, mode)
    page.click("a.button:text-is('Console')")
    page.wait_for_selector("#status.connected", timeout=20000)
    first = page.evaluate(STATIC_FETCHED)
    assert any("/static/bundles/" in name for name in first["fetched"])  # loaded from the portal once
    console_url = page.url
    page.goto(f"{portal.url}/")
    page.goto(console_url)
    page.wait_for_selector("#status.connected", timeout=20000)
    again = page.evaluate(STATIC_FETCHED)
    assert again["used"] >= 3 and again["fetched"] == []


def test_a_sticky_ctrl_with_the_next_key_interrupts_a_command(page, portal):
    """The toolbar's sticky Ctrl, then C pressed on the screen: the portal presses Ctrl+C in the
    guest (a `sleep` ends at once, so a marker typed next reaches the serial port in time)."""
    start_vm_in_mode(page, portal, "vnc")
    page.click("a.button:text-is('Console')")
    page.wait_for_selector("#status.connected", timeout=20000)
    selector = CANVAS["vnc"]
    wait_for_canvas(page, selector, lambda s: s["colours"] >= 2 and s["lit"] > 200)
    reader = SerialReader(settings.LIBVIRT_URI, portal.vm_name)
    try:
        reader.wait_for_prompt()
        type_a_marker(page, selector, reader, "before")  # the screen's shell answers
        type_keys(page, "sleep 600\n")
        page.click("#send-keys button[data-modifier=ctrl]")
        assert page.get_attribute("#send-keys button[data-modifier=ctrl]", "aria-pressed") == "true"
        page.click(selector)
        page.keyboard.press("KeyC")
        wait_until(page, "document.querySelector('#status').textContent.includes('Pressed ctrl+c')")
        assert page.get_attribute("#send-keys button[data-modifier=ctrl]", "aria-pressed") == "false"
        marker = f"after-{secrets.token_hex(4)}"
        type_keys(page, f"echo {marker} > /dev/ttyS0\n")
        reader.wait_for(marker.encode(), timeout=15)  # the shell was back: sleep 600 was interrupted
    finally:
        reader.close()
