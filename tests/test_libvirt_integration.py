"""On the real libvirtd with QEMU: starting VMs in each console mode, and switching modes."""

import socket
import subprocess

import pytest
from django.core.management import call_command
from django.urls import reverse

from console.domainxml import graphics_endpoint
from console.globalconfig import CONSOLE_MODE, config_set
from console.hypervisor import hypervisor_for
from console.models import VirtualMachine
from console.vms import vm_start, vm_status

pytestmark = [pytest.mark.hypervisor, pytest.mark.django_db]


def live_endpoint(vm):
    return graphics_endpoint(hypervisor_for(vm.host.uri).xml(vm.name))


def domdisplay(vm):
    return subprocess.run(
        ["virsh", "-c", vm.host.uri, "domdisplay", vm.name], capture_output=True, text=True, check=True
    ).stdout.strip()


def greeting(port):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.settimeout(5)
        return sock.recv(12)


@pytest.mark.parametrize("mode", ["vnc", "spice"])
def test_start_in_each_mode(make_vm, user, mode):
    config_set(key=CONSOLE_MODE, value=mode, actor="test")
    vm = make_vm()
    assert vm_start(vm=vm, user=user) == mode
    endpoint = live_endpoint(vm)
    assert endpoint.type == mode
    assert endpoint.listen == "127.0.0.1"
    assert endpoint.port >= 5900
    if mode == "spice":
        assert domdisplay(vm) == f"spice://127.0.0.1:{endpoint.port}"
    else:
        assert domdisplay(vm) == f"vnc://127.0.0.1:{endpoint.port - 5900}"
        assert greeting(endpoint.port).startswith(b"RFB 003.")
    assert VirtualMachine.objects.get(pk=vm.pk).started_mode == mode


def test_per_vm_override_beats_the_global_mode(make_vm, user):
    vm = make_vm(console_mode="spice")
    assert vm_start(vm=vm, user=user) == "spice"
    assert live_endpoint(vm).type == "spice"


def test_mode_change_needs_a_restart_and_reboot_applies_it(client, make_vm, user):
    vm = make_vm()
    client.force_login(user)
    client.post(reverse("console:vm-action", args=[vm.id, "start"]))
    assert live_endpoint(vm).type == "vnc"
    assert "restart required" not in client.get(vm.get_absolute_url()).content.decode()

    call_command("globalconfig", "set", "kvm.consoleMode", "spice")
    assert live_endpoint(vm).type == "vnc"  # a running VM keeps its protocol
    assert vm_status(vm).restart_required
    assert "restart required" in client.get(vm.get_absolute_url()).content.decode()
    assert "restart required" in client.get(reverse("console:vm-list")).content.decode()

    page = client.post(reverse("console:vm-action", args=[vm.id, "reboot"]), follow=True).content.decode()
    assert "restarted with a SPICE console" in page
    assert live_endpoint(vm).type == "spice"
    assert domdisplay(vm).startswith("spice://127.0.0.1:")
    assert "restart required" not in client.get(vm.get_absolute_url()).content.decode()
    assert list(vm.events.values_list("action", flat=True)) == ["reboot", "start"]


def test_starting_a_running_vm_is_a_message_not_an_error(client, make_vm, user):
    vm = make_vm()
    client.force_login(user)
    client.post(reverse("console:vm-action", args=[vm.id, "start"]))
    response = client.post(reverse("console:vm-action", args=[vm.id, "start"]), follow=True)
    assert response.status_code == 200
    assert f"{vm.name} is already running." in response.content.decode()


def test_failed_start_restores_the_previous_definition(client, make_vm, user):
    vm = make_vm()
    vm_start(vm=vm, user=user)
    hypervisor = hypervisor_for(vm.host.uri)
    hypervisor.destroy(vm.name)
    before = hypervisor.xml(vm.name, inactive=True)

    VirtualMachine.objects.filter(pk=vm.pk).update(disk_image="/nonexistent/disk.qcow2")
    client.force_login(user)
    page = client.post(reverse("console:vm-action", args=[vm.id, "start"]), follow=True).content.decode()
    assert f"Could not start {vm.name}" in page and "/nonexistent/disk.qcow2" in page
    assert hypervisor.state(vm.name) == "shut off"
    assert hypervisor.xml(vm.name, inactive=True) == before
    assert list(vm.events.values_list("action", flat=True)) == ["start"]


def test_failed_first_start_leaves_no_domain(make_vm, user):
    vm = make_vm(disk_image="/nonexistent/disk.qcow2")
    with pytest.raises(Exception, match="nonexistent"):
        vm_start(vm=vm, user=user)
    assert hypervisor_for(vm.host.uri).state(vm.name) == "missing"


def test_importdomains_adopts_unknown_domains(make_vm, user, local_host, capsys):
    vm = make_vm(vcpus=1, memory_mib=96)
    vm_start(vm=vm, user=user)
    uuid_before = vm.uuid
    VirtualMachine.objects.filter(pk=vm.pk).delete()
    call_command("importdomains", "--host", local_host.name, "--owner", user.username)
    imported = VirtualMachine.objects.get(name=vm.name, host=local_host)
    assert (imported.uuid, imported.memory_mib, imported.vcpus, imported.owner) == (uuid_before, 96, 1, user)
    assert imported.boot_menu and imported.started_mode == "vnc"
    assert f"imported {vm.name}" in capsys.readouterr().out


@pytest.mark.parametrize("mode", ["spice", "vnc"])
def test_live_xml_keeps_the_desktop_devices_and_the_serial_console(make_vm, user, mode):
    """QEMU started with every device the builder asked for: libvirt's live XML has them."""
    import xml.etree.ElementTree as ET

    from console.vms import demo_guest_boot

    config_set(key=CONSOLE_MODE, value=mode, actor="test")
    vm = make_vm(**demo_guest_boot())
    vm_start(vm=vm, user=user)
    devices = ET.fromstring(hypervisor_for(vm.host.uri).xml(vm.name)).find("devices")
    assert devices.find("serial").get("type") == "pty" and devices.find("serial/source").get("path")
    assert devices.find("console/target").get("type") == "serial"
    channels = {c.get("type"): c for c in devices.findall("channel")}
    if mode == "spice":
        assert channels["spicevmc"].find("target").get("name") == "com.redhat.spice.0"
        assert devices.find("sound").get("model") == "ich9"
        assert devices.find("audio").get("type") == "spice"
        assert devices.find("controller[@type='usb']").get("model") == "qemu-xhci"
        assert len(devices.findall("redirdev[@type='spicevmc']")) == 2
    else:
        assert channels["qemu-vdagent"].find("source/clipboard").get("copypaste") == "yes"
        assert devices.find("sound") is None


@pytest.mark.parametrize(
    "mode, policy, copypaste",
    [("spice", "both", "yes"), ("spice", "from-vm", "no"), ("vnc", "from-vm", "yes"), ("vnc", "off", "no")],
)
def test_console_clipboard_reaches_the_live_xml(make_vm, user, mode, policy, copypaste):
    """console.clipboard is enforced in the VM itself: QEMU gets the clipboard switch."""
    import xml.etree.ElementTree as ET

    config_set(key=CONSOLE_MODE, value=mode, actor="test")
    config_set(key="console.clipboard", value=policy, actor="test")
    vm = make_vm()
    vm_start(vm=vm, user=user)
    devices = ET.fromstring(hypervisor_for(vm.host.uri).xml(vm.name)).find("devices")
    if mode == "spice":
        assert devices.find("graphics/clipboard").get("copypaste") == copypaste
    else:
        assert devices.find("channel[@type='qemu-vdagent']/source/clipboard").get("copypaste") == copypaste
