"""Pure functions between VMs and libvirt domain XML: build it, and read the console from it.

XML is built with ElementTree, so every string from a user is escaped by the library; strings
that XML cannot carry at all (control characters) are refused.
"""

from __future__ import annotations

import re
import secrets
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Protocol
from uuid import UUID

UTC = timezone.utc

# Expired long ago: the console stays locked until a ticket sets a fresh password.
LOCKED_UNTIL = "2001-01-01T00:00:00"
BOOT_MENU_TIMEOUT_MS = 30000
# virtio-gpu's first screen, and the largest the guest's console can grow to later: the
# driver's framebuffer keeps the size of the first mode.
VIRTIO_SCREEN = (1920, 1200)
VNC_PASSWORD_MAX = 8
USB_REDIRECTION_CHANNELS = 2  # USB devices a SPICE client can redirect at once
_XML_UNSAFE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


class DomainSpec(Protocol):
    """What the builder reads from a VM (a `VirtualMachine` is one)."""

    name: str
    uuid: UUID
    description: str
    vcpus: int
    memory_mib: int
    disk_image: str
    boot_menu: bool
    kernel: str
    initrd: str
    kernel_cmdline: str
    serial_console: bool
    video: str  # "standard" or "virtio"


@dataclass(frozen=True)
class GraphicsEndpoint:
    """Where a running domain's console listens."""

    type: str  # "spice" or "vnc"
    listen: str
    port: int
    tls_port: int | None = None


def graphics_password_new(mode: str) -> str:
    """A random graphics password; VNC only uses the first 8 characters, so give it exactly 8."""
    if mode == "vnc":
        return secrets.token_urlsafe(6)  # 8 characters, 48 bits: VNC's limit
    return secrets.token_urlsafe(24)


def _text(value: str, what: str) -> str:
    if _XML_UNSAFE.search(value):
        raise ValueError(f"{what} contains control characters that XML cannot carry")
    return value


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attrs)
    if text is not None:
        element.text = text
    return element


def clipboard_in_vm(mode: str, policy: str) -> bool:
    """Whether the VM's own clipboard channel is on under a console.clipboard policy. Each has
    one switch for both ways: on only where the proxy can stop the way that is not allowed
    (a VNC client's clipboard, for from-vm)."""
    if mode == "spice":
        return policy == "both"
    return policy in ("both", "from-vm")


def domain_xml_build(
    vm: DomainSpec,
    *,
    mode: str,
    listen_address: str,
    password: str,
    clipboard: str = "both",
    serial_log: str = "",
) -> str:
    """The domain XML for a VM whose console uses `mode` ("vnc" or "spice"), locked by `password`,
    with the clipboard as the `clipboard` policy (console.clipboard) allows, and its serial port
    logged by virtlogd to `serial_log` (appended across starts, rotated by virtlogd)."""
    if mode not in ("vnc", "spice"):
        raise ValueError(f"console mode must be vnc or spice, not {mode!r}")
    copypaste = "yes" if clipboard_in_vm(mode, clipboard) else "no"
    domain = ET.Element("domain", type="qemu")
    _sub(domain, "name", _text(vm.name, "name"))
    _sub(domain, "uuid", str(vm.uuid))
    if vm.description:
        _sub(domain, "description", _text(vm.description, "description"))
    _sub(domain, "memory", str(int(vm.memory_mib)), unit="MiB")
    _sub(domain, "vcpu", str(int(vm.vcpus)))

    os_ = _sub(domain, "os")
    _sub(os_, "type", "hvm", arch="x86_64", machine="pc")
    if vm.kernel:  # direct kernel boot: QEMU loads the kernel, no firmware menu to show
        _sub(os_, "kernel", _text(vm.kernel, "kernel"))
        if vm.initrd:
            _sub(os_, "initrd", _text(vm.initrd, "initrd"))
        if vm.kernel_cmdline:
            _sub(os_, "cmdline", _text(vm.kernel_cmdline, "kernel command line"))
    else:
        _sub(os_, "boot", dev="hd")
        if vm.boot_menu:
            _sub(os_, "bootmenu", enable="yes", timeout=str(BOOT_MENU_TIMEOUT_MS))
    features = _sub(domain, "features")
    _sub(features, "acpi")
    _sub(domain, "on_poweroff", "destroy")
    _sub(domain, "on_reboot", "restart")
    _sub(domain, "on_crash", "destroy")

    devices = _sub(domain, "devices")
    if vm.disk_image:
        disk = _sub(devices, "disk", type="file", device="disk")
        _sub(disk, "driver", name="qemu", type="qcow2")
        _sub(disk, "source", file=_text(vm.disk_image, "disk image"))
        _sub(disk, "target", dev="vda", bus="virtio")
    if vm.serial_console:
        # A pty-backed serial port, and the console that libvirt's console stream API opens.
        serial = _sub(devices, "serial", type="pty")
        if serial_log:
            _sub(serial, "log", file=_text(serial_log, "serial log"), append="on")
        _sub(serial, "target", port="0")
        console = _sub(devices, "console", type="pty")
        _sub(console, "target", type="serial", port="0")
    if mode == "spice":
        # USB 3 for the tablet and for redirecting the client's USB devices (.vv enable-usbredir).
        _sub(devices, "controller", type="usb", model="qemu-xhci")
    # An absolute pointer, so the browser's and virt-viewer's mouse lines up with the guest's.
    _sub(devices, "input", type="tablet", bus="usb")

    graphics = _sub(
        devices,
        "graphics",
        type=mode,
        autoport="yes",
        passwd=password[:VNC_PASSWORD_MAX] if mode == "vnc" else password,
        passwdValidTo=LOCKED_UNTIL,
        connected="keep",
    )
    if mode == "vnc":
        del graphics.attrib["connected"]  # a SPICE-only attribute
    _sub(graphics, "listen", type="address", address=listen_address)
    if mode == "spice":
        _sub(graphics, "clipboard", copypaste=copypaste)
        # Files dropped on the viewer go through the same agent as the clipboard: only when
        # the policy lets everything through both ways.
        _sub(graphics, "filetransfer", enable="yes" if clipboard == "both" else "no")
    _display_devices(devices, vm, mode, copypaste)
    _sub(devices, "memballoon", model="none")
    return ET.tostring(domain, encoding="unicode")


def _display_devices(devices: ET.Element, vm: DomainSpec, mode: str, copypaste: str) -> None:
    """The display device, and the desktop devices of each protocol."""
    video = _sub(devices, "video")
    if vm.video == "virtio":
        # virtio-gpu follows the screen size a viewer asks for (VNC's SetDesktopSize, SPICE's
        # monitors configuration), with a guest driver.
        model = _sub(video, "model", type="virtio", heads="1")
        _sub(model, "resolution", x=str(VIRTIO_SCREEN[0]), y=str(VIRTIO_SCREEN[1]))
    else:
        _sub(video, "model", type="qxl" if mode == "spice" else "vga")
    if mode == "spice":
        # The desktop devices SPICE was chosen for: the guest agent's channel (clipboard,
        # resolution), sound played and recorded through the SPICE client, USB redirection.
        channel = _sub(devices, "channel", type="spicevmc")
        _sub(channel, "target", type="virtio", name="com.redhat.spice.0")
        sound = _sub(devices, "sound", model="ich9")
        _sub(sound, "audio", id="1")
        _sub(devices, "audio", id="1", type="spice")
        for _ in range(USB_REDIRECTION_CHANNELS):
            _sub(devices, "redirdev", bus="usb", type="spicevmc")
    else:
        # QEMU's own clipboard agent: the VNC client's clipboard reaches a guest running
        # spice-vdagent, without SPICE.
        channel = _sub(devices, "channel", type="qemu-vdagent")
        source = _sub(channel, "source")
        _sub(source, "clipboard", copypaste=copypaste)
        _sub(source, "mouse", mode="client")
        _sub(channel, "target", type="virtio", name="com.redhat.spice.0")


def resizable_screen(live_xml: str) -> bool:
    """Whether a running domain's display follows the size a viewer asks for (virtio-gpu)."""
    model = ET.fromstring(live_xml).find("./devices/video/model")
    return model is not None and model.get("type") == "virtio"


def has_serial_console(live_xml: str) -> bool:
    """Whether a domain's XML has a console on a serial port, which libvirt's stream API opens."""
    root = ET.fromstring(live_xml)
    for console in root.iterfind("./devices/console"):
        target = console.find("target")
        if target is None or target.get("type", "serial") == "serial":
            return True
    return False


def _graphics_element(live_xml: str) -> ET.Element | None:
    root = ET.fromstring(live_xml)
    for graphics in root.iterfind("./devices/graphics"):
        if graphics.get("type") in ("spice", "vnc"):
            return graphics
    return None


def graphics_endpoint(live_xml: str) -> GraphicsEndpoint | None:
    """The console endpoint of a running domain's live XML; None when it has none (or no port yet)."""
    graphics = _graphics_element(live_xml)
    if graphics is None:
        return None
    port = int(graphics.get("port", "-1"))
    if port <= 0:
        return None
    listen = graphics.get("listen")
    listen_element = graphics.find("listen")
    if listen_element is not None and listen_element.get("address"):
        listen = listen_element.get("address")
    tls_port = int(graphics.get("tlsPort", "-1"))
    return GraphicsEndpoint(
        type=graphics.get("type", ""),
        listen=listen or "127.0.0.1",
        port=port,
        tls_port=tls_port if tls_port > 0 else None,
    )


def graphics_password_xml(live_xml: str, *, password: str, valid_until: datetime) -> str:
    """The live graphics device with a new password valid until `valid_until` (aware, any zone).

    Clients already connected keep their connection (SPICE `connected='keep'`).
    """
    graphics = _graphics_element(live_xml)
    if graphics is None:
        raise ValueError("the domain has no SPICE or VNC graphics device")
    if graphics.get("type") == "vnc":
        password = password[:VNC_PASSWORD_MAX]
    else:
        graphics.set("connected", "keep")
    graphics.set("passwd", password)
    graphics.set("passwdValidTo", valid_until.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    return ET.tostring(graphics, encoding="unicode")
