import pytest
from django.test import Client
from django.urls import reverse

from console.models import Host, VirtualMachine, VmEvent

pytestmark = pytest.mark.django_db


@pytest.fixture
def test_host():
    return Host.objects.create(name="fake", uri="test:///default")


@pytest.fixture
def vm(test_host, user):
    return VirtualMachine.objects.create(name="alices-vm", owner=user, host=test_host)


def action_url(vm, action):
    return reverse("console:vm-action", args=[vm.id, action])


def test_login_required(client, vm):
    response = client.get(reverse("console:vm-list"))
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    assert client.get("/accounts/login/").status_code == 200


def test_owner_sees_their_vm_with_its_state(client, user, vm):
    client.force_login(user)
    page = client.get(reverse("console:vm-list")).content.decode()
    assert "alices-vm" in page and "missing" in page  # not defined on the fake host
    detail = client.get(vm.get_absolute_url())
    assert detail.status_code == 200 and "starts with VNC" in detail.content.decode()


def test_another_users_vm_is_404_everywhere(client, other_user, vm):
    client.force_login(other_user)
    assert "alices-vm" not in client.get(reverse("console:vm-list")).content.decode()
    assert client.get(vm.get_absolute_url()).status_code == 404
    for action in ("start", "shutdown", "poweroff", "reboot"):
        assert client.post(action_url(vm, action)).status_code == 404
    assert not VmEvent.objects.exists()


def test_staff_see_every_vm(client, staff_user, vm):
    client.force_login(staff_user)
    assert "alices-vm" in client.get(reverse("console:vm-list")).content.decode()
    assert client.get(vm.get_absolute_url()).status_code == 200


def test_actions_need_post_and_csrf(user, vm):
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    assert client.get(action_url(vm, "start")).status_code == 405
    assert client.post(action_url(vm, "start")).status_code == 403
    assert not VmEvent.objects.exists()


def test_unknown_action_is_404(client, user, vm):
    client.force_login(user)
    assert client.post(f"/vms/{vm.id}/explode/").status_code == 404


def test_stopping_a_vm_that_is_not_running_says_so(client, user, vm):
    client.force_login(user)
    page = client.post(action_url(vm, "poweroff"), follow=True).content.decode()
    assert "alices-vm is not running." in page


def test_unreachable_hypervisor_is_a_503_naming_the_host(client, user, staff_user):
    host = Host.objects.create(name="far-away", uri="qemu+unix:///system?socket=/nonexistent/sock")
    vm = VirtualMachine.objects.create(name="remote-vm", owner=user, host=host)
    client.force_login(staff_user)
    page = client.get(vm.get_absolute_url()).content.decode()
    assert "far-away" in page and "/nonexistent/sock" in page  # staff see libvirt's words
    client.force_login(user)
    for response in (client.get(vm.get_absolute_url()), client.post(action_url(vm, "start"))):
        assert response.status_code == 503
        page = response.content.decode()
        # The user learns which host and what to do, never libvirt's words (they can quote files).
        assert "far-away" in page and "tell an administrator" in page
        assert "/nonexistent/sock" not in page and "qemu+unix" not in page
    listing = client.get(reverse("console:vm-list"))
    assert listing.status_code == 503
    assert "far-away" in listing.content.decode() and "remote-vm" in listing.content.decode()
    assert VirtualMachine.objects.get(pk=vm.pk).started_mode == ""
