"""Shared fixtures: users, the local host, and VMs whose libvirt domains are cleaned up."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest
from django.conf import settings

from console.hypervisor import ACTIVE_STATES, MISSING, HypervisorError, hypervisor_for
from console.models import Host, VirtualMachine


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user("alice", password="alice-pw-123")


@pytest.fixture
def other_user(django_user_model):
    return django_user_model.objects.create_user("mallory", password="mallory-pw-123")


@pytest.fixture
def staff_user(django_user_model):
    return django_user_model.objects.create_superuser("root", password="root-pw-123")


@pytest.fixture
def local_host(db) -> Host:
    host, _ = Host.objects.get_or_create(uri=settings.LIBVIRT_URI, defaults={"name": "local"})
    return host


@pytest.fixture
def make_vm(local_host, user):
    """Makes VMs named pt-<random> on the local host; their domains are removed afterwards."""
    made: list[VirtualMachine] = []

    def make(**fields) -> VirtualMachine:
        fields.setdefault("name", f"pt-{uuid.uuid4().hex[:10]}")
        fields.setdefault("owner", user)
        fields.setdefault("host", local_host)
        fields.setdefault("boot_menu", True)
        vm = VirtualMachine.objects.create(**fields)
        made.append(vm)
        return vm

    yield make
    for vm in made:
        domain_remove(vm.host.uri, vm.name)


def domain_remove(uri: str, name: str) -> None:
    hypervisor = hypervisor_for(uri)
    try:
        state = hypervisor.state(name)
        if state in ACTIVE_STATES:
            hypervisor.destroy(name)
        if state != MISSING:
            hypervisor.undefine(name)
    except HypervisorError:
        pass


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items):
    """Browser tests last: Playwright's sync API keeps an event loop running in the main thread
    while its browser is open, which the other tests (rightly) cannot share."""
    items.sort(key=lambda item: item.get_closest_marker("browser") is not None)


ROOT = Path(__file__).resolve().parent.parent
HV2_DIR = ROOT / "var" / "hv2"
HV2_URI = "qemu+ssh://root@10.231.7.2/system"


@pytest.fixture(scope="session")
def hv2():
    """A second real libvirt host (bin/hv2), started for the tests that need it and stopped after."""
    if os.geteuid() != 0:
        pytest.skip("the second host needs root (network namespaces)")
    subprocess.run([str(ROOT / "bin" / "hv2"), "up"], check=True, timeout=120)
    yield HV2_DIR
    subprocess.run([str(ROOT / "bin" / "hv2"), "down"], timeout=120)


@pytest.fixture
def hv2_host(db, hv2) -> Host:
    """hv2 as an admin adds it: its URI, the portal's key for it, and its host key."""
    return Host.objects.create(
        name="hv2",
        uri=HV2_URI,
        ssh_key_file=str(hv2 / "id_ed25519"),
        ssh_host_key=(hv2 / "ssh_host_ed25519_key.pub").read_text(),
    )


@pytest.fixture
def vms(user):
    """vm-a and vm-b: running domains of libvirt's test driver (fixtures/testnode.xml), owned
    by `user`; their consoles are played by the tests' own stand-ins (tests/helpers.py)."""
    from tests.helpers import TEST_NODE_URI

    host = Host.objects.create(name="fake", uri=TEST_NODE_URI)
    return (
        VirtualMachine.objects.create(name="vm-a", owner=user, host=host),
        VirtualMachine.objects.create(name="vm-b", owner=user, host=host),
    )


@pytest.fixture
def vm(vms):
    return vms[0]
