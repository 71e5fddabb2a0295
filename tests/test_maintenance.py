"""Host maintenance on real QEMU with the second host (bin/hv2): a host in maintenance takes no
VM; entering it moves the demo guest away (to the least loaded other host that answers), or says
why it stayed; leaving it is one action, after which VMs start there again."""

import pytest

from console.errors import StaffOnly, VmStateConflict
from console.hypervisor import hypervisor_for
from console.livemigration import vm_migrate
from console.maintenance import NO_TARGET, host_maintenance_enter, host_maintenance_leave, least_loaded_host
from console.models import Host, HostMaintenance
from console.vms import demo_guest_boot, vm_reboot, vm_start
from tests.conftest import domain_remove
from tests.test_migration import HOST_ADDRESS, HV2_ADDRESS, _shell_answers

pytestmark = [pytest.mark.hypervisor, pytest.mark.hv2, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def guest(make_vm, local_host, hv2_host, staff_user):
    """The demo guest running on this host, over VNC; wherever it ends up, removed after."""
    vm = make_vm(
        console_mode="vnc",
        boot_menu=False,
        **demo_guest_boot(),
    )
    vm_start(vm=vm, user=staff_user)
    yield vm
    for host in (local_host, hv2_host):
        domain_remove(host.uri, vm.name)


def test_maintenance_empties_the_host_and_leaving_it_restores_starts(
    guest, make_vm, local_host, hv2_host, staff_user
):
    Host.objects.filter(pk=local_host.pk).update(migration_address=HOST_ADDRESS)
    # No other host takes VMs yet (hv2 has no migration address): the guest stays, and says why.
    stuck = host_maintenance_enter(host=local_host, user=staff_user, in_process=True)
    assert stuck.state == HostMaintenance.State.INCOMPLETE
    assert stuck.summary == [{"vm": guest.name, "stayed": NO_TARGET}]
    assert hypervisor_for(local_host).state(guest.name) == "running"
    # In maintenance: nothing starts, restarts or moves here.
    other = make_vm()
    with pytest.raises(VmStateConflict, match="local is in maintenance"):
        vm_start(vm=other, user=staff_user)
    with pytest.raises(VmStateConflict, match="in maintenance"):
        vm_reboot(vm=guest, user=staff_user)
    assert hypervisor_for(local_host).state(guest.name) == "running"  # refused before the power-off

    # With hv2 taking VMs, entering again moves the guest there, its shell still answering.
    Host.objects.filter(pk=hv2_host.pk).update(migration_address=HV2_ADDRESS)
    assert least_loaded_host(excluding=local_host) == hv2_host
    emptied = host_maintenance_enter(host=local_host, user=staff_user, in_process=True)
    assert emptied.state == HostMaintenance.State.EMPTY, emptied.summary
    assert emptied.summary == [{"vm": guest.name, "moved_to": "hv2"}]
    guest.refresh_from_db()
    assert guest.host == hv2_host
    assert hypervisor_for(local_host).state(guest.name) == "missing"
    _shell_answers(guest)
    stuck.refresh_from_db()
    assert stuck.ended_at is not None  # one maintenance at a time: the retry replaced it
    with pytest.raises(VmStateConflict, match="in maintenance"):
        vm_migrate(vm=guest, target=local_host, user=staff_user)

    # Leaving is one action: VMs start here again.
    ended = host_maintenance_leave(host=local_host, user=staff_user)
    assert ended is not None and ended.pk == emptied.pk and ended.ended_at is not None
    local_host.refresh_from_db()
    assert not local_host.maintenance
    vm_start(vm=other, user=staff_user)
    assert hypervisor_for(local_host).state(other.name) == "running"


def test_only_staff_put_a_host_in_maintenance(local_host, user):
    with pytest.raises(StaffOnly):
        host_maintenance_enter(host=local_host, user=user, in_process=True)
    with pytest.raises(StaffOnly):
        host_maintenance_leave(host=local_host, user=user)
    local_host.refresh_from_db()
    assert not local_host.maintenance
