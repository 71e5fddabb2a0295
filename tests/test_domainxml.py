import uuid
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from types import SimpleNamespace

import pytest

from console.domainxml import (
    LOCKED_UNTIL,
    GraphicsEndpoint,
    domain_xml_build,
    graphics_endpoint,
    graphics_password_new,
    graphics_password_xml,
    has_serial_console,
    resizable_screen,
)


def spec(**fields):
    base = dict(
        name="web-1",
        uuid=uuid.uuid4(),
        description="",
        vcpus=2,
        memory_mib=128,
        disk_image="",
        boot_menu=True,
        kernel="",
        initrd="",
        kernel_cmdline="",
        serial_console=True,
        video="standard",
    )
    base.update(fields)
    return SimpleNamespace(**base)


def build(mode, **fields):
    vm = spec(**fields)
    xml = domain_xml_build(vm, mode=mode, listen_address="127.0.0.1", password="s3cret-pass")
    return vm, ET.fromstring(xml)


def test_spice_domain():
    vm, root = build("spice")
    assert root.get("type") == "qemu"
    assert root.findtext("name") == "web-1"
    assert root.findtext("uuid") == str(vm.uuid)
    assert root.find("memory").attrib == {"unit": "MiB"} and root.findtext("memory") == "128"
    assert root.findtext("vcpu") == "2"
    graphics = root.find("devices/graphics")
    assert graphics.get("type") == "spice"
    assert graphics.get("passwd") == "s3cret-pass"
    assert graphics.get("passwdValidTo") == LOCKED_UNTIL  # locked until a ticket opens it
    assert graphics.find("listen").attrib == {"type": "address", "address": "127.0.0.1"}
    assert root.find("devices/video/model").get("type") == "qxl"
    channel = root.find("devices/channel")
    assert channel.get("type") == "spicevmc"
    assert channel.find("target").get("name") == "com.redhat.spice.0"
    assert root.find("os/bootmenu").attrib == {"enable": "yes", "timeout": "30000"}


def test_vnc_domain():
    _, root = build("vnc")
    graphics = root.find("devices/graphics")
    assert graphics.get("type") == "vnc"
    assert graphics.get("passwd") == "s3cret-p"  # VNC takes 8 characters at most
    assert graphics.get("passwdValidTo") == LOCKED_UNTIL
    assert "connected" not in graphics.attrib
    assert root.find("devices/video/model").get("type") == "vga"
    assert root.find("devices/channel[@type='spicevmc']") is None


@pytest.mark.parametrize("mode", ["vnc", "spice"])
def test_the_virtio_video_model_gives_a_screen_that_follows_the_viewer(mode):
    _, root = build(mode, video="virtio")
    models = root.findall("devices/video/model")
    assert [m.get("type") for m in models] == ["virtio"]
    assert models[0].find("resolution").attrib == {"x": "1920", "y": "1200"}
    xml = ET.tostring(root, encoding="unicode")
    assert resizable_screen(xml)
    assert not resizable_screen(ET.tostring(build(mode)[1], encoding="unicode"))


def test_disk_image_and_no_boot_menu():
    _, root = build("vnc", disk_image="/var/lib/libvirt/images/a b.qcow2", boot_menu=False)
    assert root.find("devices/disk/source").get("file") == "/var/lib/libvirt/images/a b.qcow2"
    assert root.find("os/bootmenu") is None


def test_hostile_strings_cannot_add_elements():
    hostile = "</description><devices><graphics type='vnc' listen='0.0.0.0'/></devices><description>"
    _, root = build("spice", description=hostile, disk_image="/x'/><disk file='/etc/shadow")
    assert root.findtext("description") == hostile
    assert len(root.findall("devices/graphics")) == 1
    assert root.find("devices/graphics/listen").get("address") == "127.0.0.1"
    assert len(root.findall("devices/disk")) == 1


def test_control_characters_are_refused():
    with pytest.raises(ValueError, match="control characters"):
        build("vnc", description="bell\x07")


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="vnc or spice"):
        build("rdp")


LIVE = """<domain type='qemu' id='3'><name>web-1</name><devices>
<graphics type='spice' port='5901' tlsPort='5902' autoport='yes' listen='127.0.0.1'>
  <listen type='address' address='127.0.0.1'/>
</graphics><video><model type='qxl'/></video></devices></domain>"""


def test_graphics_endpoint_from_live_xml():
    assert graphics_endpoint(LIVE) == GraphicsEndpoint("spice", "127.0.0.1", 5901, 5902)
    vnc = "<domain><devices><graphics type='vnc' port='5900' listen='::1'/></devices></domain>"
    assert graphics_endpoint(vnc) == GraphicsEndpoint("vnc", "::1", 5900, None)
    assert graphics_endpoint("<domain><devices/></domain>") is None
    assert graphics_endpoint("<domain><devices><graphics type='vnc' port='-1'/></devices></domain>") is None


def test_password_update_xml_keeps_the_device_and_sets_validity_in_utc():
    later = datetime(2030, 1, 2, 4, 5, 6, tzinfo=timezone.utc)
    device = ET.fromstring(graphics_password_xml(LIVE, password="pw", valid_until=later))
    assert device.tag == "graphics" and device.get("type") == "spice" and device.get("port") == "5901"
    assert device.get("passwd") == "pw"
    assert device.get("passwdValidTo") == "2030-01-02T04:05:06"
    assert device.get("connected") == "keep"


def test_random_passwords():
    assert len(graphics_password_new("vnc")) == 8
    assert len(graphics_password_new("spice")) >= 32
    assert graphics_password_new("spice") != graphics_password_new("spice")


def test_direct_kernel_boot_replaces_the_firmware_boot():
    _, root = build(
        "vnc", kernel="/boot/k", initrd="/boot/i.img", kernel_cmdline="console=tty0 console=ttyS0"
    )
    assert (root.findtext("os/kernel"), root.findtext("os/initrd")) == ("/boot/k", "/boot/i.img")
    assert root.findtext("os/cmdline") == "console=tty0 console=ttyS0"
    assert root.find("os/boot") is None and root.find("os/bootmenu") is None


def test_kernel_command_line_refuses_control_characters():
    with pytest.raises(ValueError, match="command line"):
        build("vnc", kernel="/boot/k", kernel_cmdline="quiet\x1b]0;x")


def test_serial_console_device_on_request():
    _, root = build("spice")
    assert root.find("devices/serial").get("type") == "pty"
    assert root.find("devices/console/target").attrib == {"type": "serial", "port": "0"}
    assert has_serial_console(ET.tostring(root, encoding="unicode"))
    _, root = build("spice", serial_console=False)
    assert root.find("devices/serial") is None
    assert not has_serial_console(ET.tostring(root, encoding="unicode"))


def test_spice_desktop_devices():
    _, root = build("spice")
    devices = root.find("devices")
    assert devices.find("sound").get("model") == "ich9"
    assert devices.find("sound/audio").get("id") == devices.find("audio").get("id")
    assert devices.find("audio").get("type") == "spice"
    assert devices.find("controller[@type='usb']").get("model") == "qemu-xhci"
    assert [r.attrib for r in devices.findall("redirdev")] == [{"bus": "usb", "type": "spicevmc"}] * 2


def test_vnc_clipboard_agent_channel():
    _, root = build("vnc")
    channel = root.find("devices/channel")
    assert channel.get("type") == "qemu-vdagent"
    assert channel.find("source/clipboard").get("copypaste") == "yes"
    assert channel.find("target").attrib == {"type": "virtio", "name": "com.redhat.spice.0"}
    assert root.find("devices/sound") is None and root.find("devices/redirdev") is None


@pytest.mark.parametrize(
    "policy, enabled", [("both", "yes"), ("to-vm", "no"), ("from-vm", "no"), ("off", "no")]
)
def test_spice_file_transfer_follows_the_clipboard_policy(policy, enabled):
    xml = domain_xml_build(spec(), mode="spice", listen_address="127.0.0.1", password="x", clipboard=policy)
    root = ET.fromstring(xml)
    assert root.find("devices/graphics/filetransfer").get("enable") == enabled
