"""Live migration between this host and the second host (bin/hv2), on real QEMU: the demo guest
moves there and back, keeps running (its shell answers on the new host's serial console), its
record follows it, a console through the portal's proxy ends "moved" (the page's cue to
reconnect) and opens again on the new host; a move to a host that does not answer leaves it
running where it was."""

import secrets

import pytest
from django.conf import settings

from console.errors import Invalid, StaffOnly
from console.hypervisor import hypervisor_for
from console.livemigration import vm_migrate, vm_moving_to
from console.models import Host, LiveMigration, VirtualMachine
from console.vms import demo_guest_boot, vm_start
from tests.conftest import domain_remove

pytestmark = [pytest.mark.hypervisor, pytest.mark.hv2, pytest.mark.django_db(transaction=True)]

HOST_ADDRESS, HV2_ADDRESS = "10.231.7.1", "10.231.7.2"  # bin/hv2's veth pair


@pytest.fixture
def hosts(local_host, hv2_host):
    Host.objects.filter(pk=local_host.pk).update(migration_address=HOST_ADDRESS)
    Host.objects.filter(pk=hv2_host.pk).update(migration_address=HV2_ADDRESS)
    local_host.refresh_from_db()
    hv2_host.refresh_from_db()
    return local_host, hv2_host


@pytest.fixture(params=["vnc", "spice"])
def guest(request, make_vm, hosts, staff_user):
    """The demo guest running on this host (VNC, SPICE), with a shell on its serial port."""
    vm = make_vm(
        console_mode=request.param,
        boot_menu=False,
        **demo_guest_boot(),
    )
    vm_start(vm=vm, user=staff_user)
    yield vm
    for host in hosts:
        domain_remove(host.uri, vm.name)


def _shell_answers(vm: VirtualMachine) -> None:
    """A marker typed on the serial console (of whichever host runs it) comes back."""
    from tests.helpers import SerialReader

    vm.refresh_from_db()
    reader = SerialReader(vm.host, vm.name)
    try:
        reader.wait_for_prompt()
        reader.wait_for(b"guest:~# ")  # the shell's prompt, not the banner's "guest:"
        marker = f"moved-{secrets.token_hex(4)}"
        reader.write(f"echo {marker}\r".encode())
        reader.wait_for(f"\r\n{marker}".encode())
    finally:
        reader.close()


def test_the_guest_moves_there_and_back_and_keeps_running(guest, hosts, staff_user):
    local, hv2 = hosts
    _shell_answers(guest)
    moved = vm_migrate(vm=guest, target=hv2, user=staff_user, in_process=True)
    assert moved.state == LiveMigration.State.DONE, moved.error
    assert moved.percent == 100 and moved.data_total > 0
    guest.refresh_from_db()
    assert guest.host == hv2
    assert hypervisor_for(hv2).state(guest.name) == "running"
    assert hypervisor_for(local).state(guest.name) == "missing"  # moved, not copied
    if guest.console_mode == "vnc":
        # QEMU 7.2 cannot migrate VNC's clipboard agent: unplugged for the move, plugged in there.
        assert "qemu-vdagent" in hypervisor_for(hv2).xml(guest.name)
    assert vm_moving_to(guest.pk) == "hv2"  # a console closing now followed the VM
    _shell_answers(guest)
    back = vm_migrate(vm=guest, target=local, user=staff_user, in_process=True)
    assert back.state == LiveMigration.State.DONE, back.error
    guest.refresh_from_db()
    assert guest.host == local
    _shell_answers(guest)


def test_a_move_to_a_host_that_does_not_answer_leaves_the_vm_running_here(guest, local_host, staff_user):
    gone = Host.objects.create(
        name="gone",
        uri="qemu+ssh://root@10.231.7.200/system",  # fenced by bin/hv2: fails at once
        ssh_key_file=str(settings.BASE_DIR / "var" / "hv2" / "id_ed25519"),
        migration_address="10.231.7.200",
    )
    failed = vm_migrate(vm=guest, target=gone, user=staff_user, in_process=True)
    assert failed.state == LiveMigration.State.FAILED
    assert "does not answer" in failed.error
    guest.refresh_from_db()
    assert guest.host == local_host
    assert hypervisor_for(local_host).state(guest.name) == "running"
    _shell_answers(guest)


def test_only_staff_move_and_only_to_hosts_that_take_vms(guest, hosts, user, hv2_host):
    with pytest.raises(StaffOnly):
        vm_migrate(vm=guest, target=hv2_host, user=user)
    Host.objects.filter(pk=hv2_host.pk).update(migration_address=None)
    hv2_host.refresh_from_db()
    from django.contrib.auth import get_user_model

    staff = get_user_model().objects.create_user("mover", is_staff=True)
    with pytest.raises(Invalid, match="no migration address"):
        vm_migrate(vm=guest, target=hv2_host, user=staff)
    with pytest.raises(Invalid, match="already runs"):
        vm_migrate(vm=guest, target=guest.host, user=staff)
