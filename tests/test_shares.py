"""Sharing a VM's console to watch: who may, what the viewer may open, and nothing more."""

import pytest

from console.models import ConsoleShare, Host, VirtualMachine
from tests.helpers import TEST_NODE_URI

pytestmark = pytest.mark.django_db


@pytest.fixture
def vm(user):
    host = Host.objects.create(name="fake", uri=TEST_NODE_URI)
    return VirtualMachine.objects.create(name="vm-a", owner=user, host=host)


def test_the_owner_shares_and_stops_sharing(client, user, other_user, vm):
    client.force_login(user)
    client.post(f"/vms/{vm.id}/shares/", {"username": other_user.username})
    share = ConsoleShare.objects.get()
    assert (share.viewer, share.shared_by, share.ended_at) == (other_user, user, None)
    page = client.get(f"/vms/{vm.id}/").content.decode()
    assert f"{other_user.username} (viewer) — not connected" in page
    again = client.post(f"/vms/{vm.id}/shares/", {"username": other_user.username}, follow=True)
    assert "is shared with mallory already" in again.content.decode()
    client.post(f"/vms/{vm.id}/shares/{share.id}/end/")
    share.refresh_from_db()
    assert share.ended_at is not None


def test_sharing_refuses_unknown_users_and_the_owner(client, user, vm):
    client.force_login(user)
    assert (
        "no active user"
        in client.post(f"/vms/{vm.id}/shares/", {"username": "nobody"}, follow=True).content.decode()
    )
    assert (
        "owns vm-a already"
        in client.post(f"/vms/{vm.id}/shares/", {"username": user.username}, follow=True).content.decode()
    )
    assert not ConsoleShare.objects.exists()


def test_only_the_owner_or_staff_may_share(client, other_user, vm, django_user_model):
    client.force_login(other_user)
    assert client.post(f"/vms/{vm.id}/shares/", {"username": other_user.username}).status_code == 404
    third = django_user_model.objects.create_user("eve", password="eve-pw-1234")
    ConsoleShare.objects.create(vm=vm, viewer=other_user)
    # a viewer cannot pass the console on either
    assert client.post(f"/vms/{vm.id}/shares/", {"username": third.username}).status_code == 404


def test_a_viewer_may_open_the_console_to_watch_and_do_nothing_else(client, other_user, vm):
    client.force_login(other_user)
    assert client.get(f"/vms/{vm.id}/console/").status_code == 404  # not shared yet
    ConsoleShare.objects.create(vm=vm, viewer=other_user)
    # past the access check (vm-a has no graphics device: 409, not 404)
    assert client.get(f"/vms/{vm.id}/console/").status_code == 409
    assert client.post(f"/vms/{vm.id}/console/ticket/").status_code == 409
    assert "vm-a" in client.get("/").content.decode()  # listed under "shared with you"
    for path in ("", "start/", "poweroff/", "serial/", "console.vv"):
        response = (
            client.post(f"/vms/{vm.id}/{path}")
            if path.endswith(("/", ".vv"))
            else client.get(f"/vms/{vm.id}/")
        )
        assert response.status_code == 404, path


def test_an_ended_share_gives_nothing(client, other_user, vm):
    from django.utils import timezone

    ConsoleShare.objects.create(vm=vm, viewer=other_user, ended_at=timezone.now())
    client.force_login(other_user)
    assert client.get(f"/vms/{vm.id}/console/").status_code == 404


def test_an_owner_who_is_not_staff_sees_who_watches_now(client, user, other_user, vm):
    """The owner's list of open consoles holds their own only; who watches is read apart."""
    from django.utils import timezone

    from console.models import ConsoleSession

    client.force_login(user)
    client.post(f"/vms/{vm.id}/shares/", {"username": other_user.username})
    assert not user.is_staff
    ConsoleSession.objects.create(
        user=other_user, vm=vm, via="channels", protocol="vnc", seen_at=timezone.now()
    )
    page = client.get(f"/vms/{vm.id}/").content.decode()
    assert f"{other_user.username} (viewer) — <strong>connected now</strong>" in page


def test_an_operator_share_lets_them_use_the_vm_for_its_time_box(client, user, other_user, vm):
    from datetime import timedelta

    from django.utils import timezone

    client.force_login(user)
    client.post(f"/vms/{vm.id}/shares/", {"username": other_user.username, "role": "operator", "hours": "4"})
    share = ConsoleShare.objects.get()
    assert share.role == "operator"
    assert timedelta(hours=3, minutes=59) < share.expires_at - timezone.now() <= timedelta(hours=4)
    client.force_login(other_user)
    assert client.get(f"/vms/{vm.id}/").status_code == 200  # their VM to operate, for now
    assert client.post(f"/vms/{vm.id}/console/ticket/").status_code == 409  # past the access check
    assert client.post(f"/vms/{vm.id}/shares/", {"username": "root"}).status_code == 302  # not an admin:
    assert ConsoleShare.objects.count() == 1  # sharing on needs the admin role
    ConsoleShare.objects.filter(pk=share.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert client.get(f"/vms/{vm.id}/").status_code == 404  # the time box is over
    assert client.post(f"/vms/{vm.id}/console/ticket/").status_code == 404
    # The owner may share again: the expired share is recorded as ended at its time.
    client.force_login(user)
    client.post(f"/vms/{vm.id}/shares/", {"username": other_user.username})
    assert ConsoleShare.objects.filter(ended_at__isnull=True).count() == 1
    assert ConsoleShare.objects.get(pk=share.pk).ended_at is not None


def test_a_share_refuses_roles_and_times_not_offered(client, user, other_user, vm):
    client.force_login(user)
    for form, said in (
        ({"role": "admin"}, "not a share&#x27;s role"),
        ({"hours": "100000"}, "A share lasts 1 hour, 4 hours"),
        ({"hours": "x"}, "A share lasts"),
    ):
        response = client.post(
            f"/vms/{vm.id}/shares/", {"username": other_user.username, **form}, follow=True
        )
        assert said in response.content.decode(), form
    assert not ConsoleShare.objects.exists()
