"""Fixtures of the proxy tests: VMs on libvirt's test driver, whose consoles the tests' own
stand-ins play (tests/helpers.py)."""

import pytest

from console.models import Host, VirtualMachine
from tests.helpers import TEST_NODE_URI


@pytest.fixture
def vms(user):
    """vm-a and vm-b: running domains of libvirt's test driver, owned by `user`."""
    host = Host.objects.create(name="fake", uri=TEST_NODE_URI)
    return (
        VirtualMachine.objects.create(name="vm-a", owner=user, host=host),
        VirtualMachine.objects.create(name="vm-b", owner=user, host=host),
    )


@pytest.fixture
def vm(vms):
    return vms[0]
