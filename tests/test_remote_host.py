"""A second real libvirt host (bin/hv2) reached over SSH: VMs there, consoles through SSH tunnels."""

import asyncio

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client

from console.hypervisor import HypervisorUnavailable, hypervisor_for
from console.hypervisor.ssh import public_key_fingerprint
from console.models import ConsoleSession, Host
from console.tickets import console_ticket_issue
from console.vms import vm_start, vm_statuses
from portal.asgi import application
from tests.conftest import domain_remove

pytestmark = [pytest.mark.hypervisor, pytest.mark.hv2, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def hv2_vm(hv2_host, make_vm):
    vm = make_vm(host=hv2_host)
    yield vm
    domain_remove(hv2_host, vm.name)


def test_the_host_answers_with_its_version(hv2_host):
    assert hypervisor_for(hv2_host).version().startswith("libvirt ")


def test_a_host_whose_key_differs_is_refused(hv2, db):
    impostor_key = (hv2 / "id_ed25519.pub").read_text()  # any key but the host's own
    host = Host.objects.create(
        name="hv2-impostor",
        uri="qemu+ssh://root@10.231.7.2:22/system",
        ssh_key_file=str(hv2 / "id_ed25519"),
        ssh_host_key=impostor_key,
    )
    with pytest.raises(HypervisorUnavailable) as refused:
        hypervisor_for(host).version()
    assert str(refused.value).startswith("hv2-impostor does not answer:")
    assert public_key_fingerprint(impostor_key).startswith("SHA256:")


def _console_first_bytes(user, vm, mode) -> bytes:
    """Open the VM's console through the portal's proxy (which authenticates to QEMU over the
    SSH tunnel) and complete the client's handshake: QEMU's first message, as the page gets it."""
    from tests.helpers import receive_exactly, rfb_handshake, spice_link

    async def run():
        client = Client()
        await database_sync_to_async(client.force_login)(user)
        session_key = client.cookies["sessionid"].value
        issued = await database_sync_to_async(console_ticket_issue)(
            user=user, vm=vm, origin="http://127.0.0.1:8000", session_key=session_key
        )
        comm = WebsocketCommunicator(
            application,
            f"/ws/console/{vm.id}/?token={issued.token}",
            headers=[
                (b"origin", b"http://127.0.0.1:8000"),
                (b"host", b"127.0.0.1:8000"),
                (b"cookie", f"sessionid={session_key}".encode()),
            ],
            subprotocols=["binary"],
        )
        comm.scope["client"] = ["127.0.0.1", 50000]
        connected, _ = await comm.connect()
        assert connected
        if mode == "vnc":
            await rfb_handshake(comm, server_init=True)
            data = await receive_exactly(comm, 24)  # QEMU's ServerInit: the screen's size...
        else:
            import struct

            from cryptography.hazmat.primitives import serialization

            from tests.helpers import OAEP

            await comm.send_to(bytes_data=spice_link(1))
            header = await receive_exactly(comm, 16)
            reply = await receive_exactly(comm, struct.unpack_from("<I", header, 12)[0])
            key = serialization.load_der_public_key(reply[4 : 4 + 162])
            await comm.send_to(bytes_data=struct.pack("<I", 1) + key.encrypt(b"\0", OAEP))
            assert await receive_exactly(comm, 4) == bytes(4)
            data = header + await receive_exactly(comm, 6)  # ...or the main channel's first message
        await comm.disconnect()
        return data

    return asyncio.run(run())


@pytest.mark.parametrize("mode", ["vnc", "spice"])
def test_a_vm_on_the_remote_host_starts_there_and_its_console_comes_through_ssh(hv2_vm, user, mode):
    hv2_vm.console_mode = mode
    hv2_vm.save()
    assert vm_start(vm=hv2_vm, user=user) == mode
    status = vm_statuses([hv2_vm])[hv2_vm.id]
    assert status.state == "running" and status.running_mode == mode
    first = _console_first_bytes(user, hv2_vm, mode)
    if mode == "vnc":  # QEMU's ServerInit: its screen, e.g. 720 x 400
        width, height = int.from_bytes(first[:2], "big"), int.from_bytes(first[2:4], "big")
        assert width >= 320 and height >= 200
    else:
        assert first.startswith(b"REDQ")  # QEMU's link reply came through, then its main channel
    session = ConsoleSession.objects.get(vm=hv2_vm)
    assert session.bytes_to_client >= 4 and session.ended_at is not None


def test_a_host_down_does_not_take_the_others_down(hv2, hv2_host, make_vm, user, local_host):
    import subprocess

    remote = make_vm(host=hv2_host)
    local = make_vm()
    pid = int((hv2 / "run" / "libvirtd.pid").read_text())
    subprocess.run(["kill", str(pid)], check=True)
    try:
        import time

        time.sleep(1)
        statuses = vm_statuses([remote, local])
        assert isinstance(statuses[remote.id], HypervisorUnavailable)
        assert str(statuses[remote.id]).startswith("hv2 does not answer")
        assert statuses[local.id].state == "missing"  # the local host answers as ever (never started)
    finally:
        subprocess.run([str(hv2.parent.parent / "bin" / "hv2"), "up"], check=True)  # restarts what is missing
    assert vm_statuses([remote])[remote.id].state == "missing"  # hv2 answers again; nothing restarted here


def test_adding_the_host_in_admin_checks_it_and_lists_its_health(client, staff_user, hv2):
    from django.urls import reverse

    client.force_login(staff_user)
    form = {
        "name": "hv2",
        "uri": "qemu+ssh://root@10.231.7.2/system",
        "ssh_key_file": str(hv2 / "id_ed25519"),
        "ssh_host_key": "",
        "console_listen_address": "127.0.0.1",
        "console_client_address": "127.0.0.1",
        "spice_ca_cert": "",
        "spice_host_subject": "",
        # The page's roles on the host's VMs (an inline): none.
        "grants-TOTAL_FORMS": "0",
        "grants-INITIAL_FORMS": "0",
    }
    page = client.post(reverse("admin:console_host_add"), form, follow=True).content.decode()
    # No host key recorded: refused, and the admin is shown the offered key to check and paste.
    host_key = (hv2 / "ssh_host_ed25519_key.pub").read_text().split()
    assert "host hv2 does not answer" in page and "offers the SSH host key SHA256:" in page
    assert f"{host_key[0]} {host_key[1]}" in page

    host = Host.objects.get(name="hv2")
    form["ssh_host_key"] = " ".join(host_key)
    page = client.post(reverse("admin:console_host_change", args=[host.pk]), form, follow=True)
    said = [str(m) for m in page.context["messages"]]
    assert any(m.startswith("Host hv2 answers: libvirt ") for m in said), said
    listing = client.get(reverse("admin:console_host_changelist")).content.decode()
    assert "✔ libvirt" in listing


def test_importdomains_adopts_the_remote_hosts_domains(hv2, hv2_host, user):
    import subprocess

    from django.core.management import call_command

    subprocess.run(
        [str(hv2 / "hv2-exec"), "virsh", "-c", "qemu:///system", "define", "/dev/stdin"],
        input="<domain type='qemu'><name>adopt-me</name><memory unit='MiB'>64</memory>"
        "<os><type arch='x86_64'>hvm</type></os></domain>",
        text=True,
        check=True,
        capture_output=True,
    )
    try:
        call_command("importdomains", "--host", "hv2", "--owner", user.username)
        assert hv2_host.virtualmachine_set.filter(name="adopt-me").exists()
    finally:
        domain_remove(hv2_host, "adopt-me")


def test_a_host_named_like_the_portals_key_never_overwrites_it(tmp_path, settings, db):
    """env.example once put SSH_KNOWN_HOSTS_DIR where the key is: a host named "id_ed25519"
    must still not write its known_hosts over the key."""
    from console.hypervisor.ssh import known_hosts_file
    from console.models import Host

    key = tmp_path / "id_ed25519"
    key.write_text("the portal's private key")
    settings.SSH_KNOWN_HOSTS_DIR = str(tmp_path)
    host = Host(
        name="id_ed25519", uri="qemu+ssh://root@10.0.0.9/system", ssh_host_key="ssh-ed25519 AAAAC3Nz x"
    )
    written = known_hosts_file(host)
    assert key.read_text() == "the portal's private key"
    assert written.parent == tmp_path and written.name == "known_hosts-id_ed25519"


def test_the_test_hosts_addresses_never_leave_this_machine(hv2):
    """Down (or never up), hv2's addresses fail here at once instead of following the default
    route off the machine; up, its own /30 reaches it."""
    import subprocess

    def route() -> str:
        return subprocess.run(["ip", "route", "get", "10.231.7.2"], capture_output=True, text=True).stdout

    hv2_bin = str(hv2.parent.parent / "bin" / "hv2")
    assert "dev hv2-h" in route()
    subprocess.run([hv2_bin, "down"], check=True, timeout=120)
    try:
        gone = subprocess.run(["ip", "route", "get", "10.231.7.2"], capture_output=True, text=True)
        assert "unreachable" in gone.stdout + gone.stderr or "No route" in gone.stderr
        assert "via" not in gone.stdout
    finally:
        subprocess.run([hv2_bin, "up"], check=True, timeout=120)
    assert "dev hv2-h" in route()
