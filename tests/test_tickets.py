"""Console tickets and the VMs' graphics passwords. Setting a password needs the real libvirtd
(QEMU); refusals that come before any password is set run on libvirt's test driver."""

import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone

import pytest
from django.test import Client
from django.urls import reverse

from console.errors import ConsoleUnavailable
from console.graphics import graphics_password_get
from console.hypervisor import hypervisor_for
from console.models import ConsoleTicket, GraphicsSecret, Host, VirtualMachine
from console.tickets import PASSWORD_MARGIN, console_ticket_issue, token_hash
from console.vms import vm_start
from tests.helpers import TEST_NODE_URI

pytestmark = pytest.mark.django_db


@pytest.fixture
def test_node(user):
    """VMs on libvirt's test driver: vm-a runs (without a graphics console), stopped-vm is defined
    in the portal only."""
    host = Host.objects.create(name="test-node", uri=TEST_NODE_URI)
    return (
        VirtualMachine.objects.create(name="vm-a", owner=user, host=host),
        VirtualMachine.objects.create(name="stopped-vm", owner=user, host=host),
    )


def live_graphics(vm):
    xml = hypervisor_for(vm.host.uri).xml(vm.name, secure=True)
    return ET.fromstring(xml).find("devices/graphics")


@pytest.mark.hypervisor
@pytest.mark.parametrize("mode", ["spice", "vnc"])
def test_tickets_keep_the_vms_password_valid_and_rotate_it_only_when_it_runs_low(
    make_vm, user, mode, settings
):
    settings.CONSOLE_TICKET_SECONDS = 60
    settings.CONSOLE_PASSWORD_SECONDS = 600
    vm = make_vm(console_mode=mode)
    vm_start(vm=vm, user=user)
    locked = live_graphics(vm)
    assert locked.get("passwdValidTo") == "2001-01-01T00:00:00"

    issued = console_ticket_issue(user=user, vm=vm)
    graphics = live_graphics(vm)
    ticket = ConsoleTicket.objects.get()
    held = graphics_password_get(vm_id=vm.pk, domain_id=ticket.domain_id)
    assert held is not None and graphics.get("passwd") == held.password[: 8 if mode == "vnc" else None]
    assert graphics.get("passwd") != locked.get("passwd")
    assert len(held.password) == (8 if mode == "vnc" else 32)
    valid_to = datetime.fromisoformat(graphics.get("passwdValidTo")).replace(tzinfo=timezone.utc)
    assert abs(valid_to - held.valid_until) < timedelta(seconds=1)
    assert timedelta(seconds=590) < valid_to - datetime.now(timezone.utc) <= timedelta(seconds=600)
    # Stored encrypted, never in the clear.
    assert held.password not in GraphicsSecret.objects.get(vm=vm).password

    # Another ticket while the password has life left: no rotation (pages never race one).
    console_ticket_issue(user=user, vm=vm)
    assert live_graphics(vm).get("passwd") == graphics.get("passwd")
    assert GraphicsSecret.objects.get(vm=vm).rotations == 1
    # Once less remains than a ticket's life and the margin, the next ticket rotates it.
    GraphicsSecret.objects.filter(vm=vm).update(
        valid_until=datetime.now(timezone.utc) + PASSWORD_MARGIN + timedelta(seconds=30)
    )
    console_ticket_issue(user=user, vm=vm)
    assert live_graphics(vm).get("passwd") != graphics.get("passwd")
    assert GraphicsSecret.objects.get(vm=vm).rotations == 2

    assert ticket.token_hash == token_hash(issued.token) and issued.token not in ticket.token_hash
    assert (ticket.protocol, ticket.address, ticket.port) == (mode, "127.0.0.1", int(graphics.get("port")))
    assert len(issued.token) == 48 and int(issued.token, 16)  # 192 bits, hex
    assert not hasattr(issued, "password")


def test_no_ticket_for_a_stopped_vm(test_node, user):
    _, stopped = test_node
    with pytest.raises(ConsoleUnavailable, match="start it to open its console"):
        console_ticket_issue(user=user, vm=stopped)
    assert not ConsoleTicket.objects.exists()


def test_no_ticket_for_a_running_vm_without_a_graphics_console(test_node, user):
    running, _ = test_node
    with pytest.raises(ConsoleUnavailable, match="vm-a has no SPICE or VNC console"):
        console_ticket_issue(user=user, vm=running)
    assert not ConsoleTicket.objects.exists()


def test_no_ticket_while_the_vm_moves_a_503_the_pages_retry(client, test_node, user):
    from console.models import LiveMigration

    running, _ = test_node
    target = Host.objects.create(name="hv9", uri="test:///default")
    LiveMigration.objects.create(vm=running, source=running.host, target=target)
    client.force_login(user)
    for path in (f"/vms/{running.pk}/console/ticket/", f"/vms/{running.pk}/serial/ticket/"):
        response = client.post(path, HTTP_ACCEPT="application/json")
        assert response.status_code == 503 and response["Retry-After"] == "2", path
        assert "is moving to hv9; its console opens there in a moment" in response.json()["error"]
    assert not ConsoleTicket.objects.exists()


@pytest.mark.parametrize("which", [0, 1])
def test_no_ticket_for_someone_elses_vm(test_node, other_user, which):
    with pytest.raises(PermissionError):
        console_ticket_issue(user=other_user, vm=test_node[which])
    assert not ConsoleTicket.objects.exists()


def test_console_page_of_a_stopped_vm_offers_start(client, test_node, user):
    _, vm = test_node
    client.force_login(user)
    response = client.get(reverse("console:vm-console", args=[vm.id]))
    assert response.status_code == 409
    page = response.content.decode()
    assert "start it to open its console" in page and "open its console</button>" in page


@pytest.mark.hypervisor
def test_console_page_and_ticket_of_a_running_vm(make_vm, user):
    vm = make_vm(console_mode="spice")
    vm_start(vm=vm, user=user)
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    page = client.get(reverse("console:vm-console", args=[vm.id]))
    assert page.status_code == 200
    assert "no-store" in page["Cache-Control"]
    assert "/static/bundles/spice-console." in page.content.decode()  # the bundle, by its hashed name
    assert not ConsoleTicket.objects.exists()  # the page asks for its ticket as it loads
    ticket_url = reverse("console:vm-console-ticket", args=[vm.id])
    assert client.post(ticket_url).status_code == 403  # no CSRF token
    fresh = client.post(ticket_url, HTTP_X_CSRFTOKEN=str(page.context["csrf_token"])).json()
    assert fresh["protocol"] == "spice" and fresh["wsPath"] == f"/ws/console/{vm.id}/"
    held = graphics_password_get(vm_id=vm.pk, domain_id=ConsoleTicket.objects.get().domain_id)
    assert "password" not in fresh and held.password not in str(fresh)  # the proxy's, not the page's
    assert ConsoleTicket.objects.count() == 1


def test_console_entry_points_are_404_for_other_users(client, test_node, other_user):
    vm, _ = test_node  # running
    client.force_login(other_user)
    assert client.get(reverse("console:vm-console", args=[vm.id])).status_code == 404
    assert client.post(reverse("console:vm-console-ticket", args=[vm.id])).status_code == 404
    assert client.get(reverse("console:vm-state", args=[vm.id])).status_code == 404
    assert not ConsoleTicket.objects.exists()
