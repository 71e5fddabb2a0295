"""The automation API on real QEMU: text typed through libvirt in the guest's keyboard layout
(German, with AltGr and dead keys) reaches the demo guest's shell byte for byte (read back from
its serial port); key combinations; the full-size screenshot shows what the typed command
printed; refusals (a character the layout lacks, a VM not running, a user who may not use the
VM, too many calls) type nothing; every call is audited without the text."""

import io

import pytest
from django.test import Client
from PIL import Image

from console.apitokens import api_token_create
from console.models import VmEvent
from console.vms import demo_guest_boot, vm_start
from tests.helpers import SerialReader

pytestmark = [pytest.mark.hypervisor, pytest.mark.django_db(transaction=True)]


def bearer(user) -> Client:
    _, raw = api_token_create(user=user, name="automation")
    return Client(headers={"Authorization": f"Bearer {raw}"})


@pytest.fixture
def german_guest(make_vm, user):
    """The demo guest with a German keyboard (kbd's de-latin1 keymap), at its shell."""
    boot = demo_guest_boot()
    boot["kernel_cmdline"] += " keymap=de"
    vm = make_vm(boot_menu=False, console_mode="vnc", keyboard_layout="de", **boot)
    vm_start(vm=vm, user=user)
    reader = SerialReader(vm.host, vm.name)
    reader.wait_for_prompt()
    reader.wait_for(b"guest:~# ")
    yield vm, reader
    reader.close()


def post(api: Client, vm, what: str, body: dict):  # noqa: ANN001 - a VirtualMachine
    return api.post(f"/api/v1/vms/{vm.id}/{what}/", body, content_type="application/json")


def lit(png: bytes) -> int:
    """Pixels that are not black: how much text the screen shows."""
    image = Image.open(io.BytesIO(png)).convert("L")
    return sum(count for level, count in enumerate(image.histogram()) if level > 64)


def test_text_typed_in_the_guests_layout_arrives_byte_for_byte(german_guest, user, other_user):
    vm, reader = german_guest
    api = bearer(user)
    text = "Grüße: é@ß ä|{[]}\\ ÄÖÜ ô <>"
    # Typed on the screen's shell (tty1), echoed to the serial port, where the test reads it.
    typed = post(api, vm, "type", {"text": f"echo 'MARK {text} END' > /dev/ttyS0\n"})
    assert typed.status_code == 200, typed.content
    assert typed.json()["layout"] == "de"
    reader.wait_for(f"MARK {text} END".encode())

    # The screenshot shows what a command printed: a cleared screen, then one full of text.
    cleared = post(api, vm, "type", {"text": "clear\n"})
    assert cleared.status_code == 200
    reader.write(b"sleep 1; echo cleared\r")
    reader.wait_for(b"\r\ncleared")
    blank = api.get(f"/api/v1/vms/{vm.id}/screenshot.png")
    assert blank.status_code == 200 and blank["Content-Type"] == "image/png"
    assert blank.content.startswith(b"\x89PNG") and Image.open(io.BytesIO(blank.content)).size[0] >= 640
    post(
        api,
        vm,
        "type",
        {"text": "yes 0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ | head -n 30; echo done > /dev/ttyS0\n"},
    )
    reader.wait_for(b"done")
    full = api.get(f"/api/v1/vms/{vm.id}/screenshot.png").content
    assert lit(full) > 5 * lit(blank.content)

    # Keys: Ctrl+C interrupts a command waiting on the screen's shell.
    post(api, vm, "type", {"text": "sleep 600; echo slept > /dev/ttyS0\n"})
    pressed = post(api, vm, "keys", {"keys": ["ctrl+c"]})
    assert pressed.json() == {"pressed": 1}
    post(api, vm, "type", {"text": "echo interrupted > /dev/ttyS0\n"})
    reader.wait_for(b"\ninterrupted")

    # Refusals type nothing, and say why.
    refused = post(api, vm, "type", {"text": "Ça coûte 5 €"})
    assert refused.status_code == 422 and "cannot type 'Ç'" in refused.json()["error"]["message"]
    unknown = post(api, vm, "keys", {"keys": ["ctrl+hyper"]})
    assert unknown.status_code == 422 and "hyper" in unknown.json()["error"]["message"]
    stranger = post(bearer(other_user), vm, "type", {"text": "reboot\n"})
    assert stranger.status_code == 404

    # Audited: who and what, never the text.
    events = list(VmEvent.objects.filter(vm=vm, action__in=["type", "keys", "screenshot"]).order_by("pk"))
    assert [e.action for e in events][:2] == ["type", "type"]
    assert events[0].detail == f"{len(text) + 30} characters, layout de"
    assert all("MARK" not in e.detail for e in events)
    assert "ctrl+c" in [e.detail for e in events if e.action == "keys"]


def test_too_many_calls_are_refused_with_a_time_to_retry(settings, make_vm, user):
    settings.AUTOMATION_ACTIONS_PER_MINUTE = 2
    vm = make_vm(boot_menu=True)
    vm_start(vm=vm, user=user)
    api = bearer(user)
    for _ in range(2):
        assert api.get(f"/api/v1/vms/{vm.id}/screenshot.png").status_code == 200
    limited = post(api, vm, "keys", {"keys": ["esc"]})
    assert limited.status_code == 429 and "try again in" in limited.json()["error"]["message"]
    assert int(limited["Retry-After"]) >= 1


def test_a_vm_that_is_not_running_says_so(make_vm, user):
    vm = make_vm()
    shot = bearer(user).get(f"/api/v1/vms/{vm.id}/screenshot.png")
    assert shot.status_code == 409 and "not running" in shot.json()["error"]["message"]
