"""Roles per VM and per host (a pool), for users and groups: viewers watch, operators operate,
admins also share; owners and staff keep every right; the VM list shows what each may see without
a query per VM; removing a grant takes the right away at the next check (an open console's
recheck: tests/proxy/test_gate.py)."""

import pytest
from django.contrib.auth.models import Group
from django.db import IntegrityError
from django.test import Client
from django.urls import reverse

from console.access import vm_may_administer, vm_may_use, vm_role, vm_shared_with, vms_watchable_by
from console.models import Host, VirtualMachine, VmGrant

pytestmark = pytest.mark.django_db


@pytest.fixture
def host():
    return Host.objects.create(name="fake", uri="test:///default")


@pytest.fixture
def vm(host, user):
    return VirtualMachine.objects.create(
        name="test", owner=user, host=host
    )  # the test driver's running domain


def test_roles_by_user_group_and_host(vm, host, user, other_user, staff_user):
    assert vm_role(user, vm) == "admin" and vm_role(staff_user, vm) == "admin"  # owner, staff
    assert vm_role(other_user, vm) is None and not vm_shared_with(other_user, vm)
    VmGrant.objects.create(vm=vm, user=other_user, role="viewer")
    assert vm_role(other_user, vm) == "viewer" and vm_shared_with(other_user, vm)
    assert not vm_may_use(other_user, vm)
    ops = Group.objects.create(name="ops")
    other_user.groups.add(ops)
    VmGrant.objects.create(host=host, group=ops, role="operator")  # every VM of the host
    assert vm_role(other_user, vm) == "operator" and vm_may_use(other_user, vm)
    assert not vm_may_administer(other_user, vm)
    assert list(VirtualMachine.objects.visible_to(other_user)) == [vm]
    other_user.groups.remove(ops)
    assert vm_role(other_user, vm) == "viewer"
    assert list(vms_watchable_by(other_user)) == [vm]
    with pytest.raises(IntegrityError):
        VmGrant.objects.create(vm=vm, host=host, user=other_user, role="admin")


def test_pages_follow_the_roles(client, vm, other_user):
    client.force_login(other_user)
    page = reverse("console:vm-detail", args=[vm.id])
    assert client.get(page).status_code == 404
    VmGrant.objects.create(vm=vm, user=other_user, role="viewer")
    assert client.get(page).status_code == 404  # a viewer watches; the VM's page is for operators
    assert "Consoles you may watch" in client.get("/").content.decode()
    grant = VmGrant.objects.create(vm=vm, user=other_user, role="operator")
    assert client.get(page).status_code == 200
    shared = client.post(reverse("console:vm-share", args=[vm.id]), {"username": "admin"}, follow=True)
    assert "its admins and staff share its console" in shared.content.decode()
    grant.role = "admin"
    grant.save()
    assert vm_may_administer(other_user, vm)


def test_the_list_costs_the_same_queries_whatever_the_grants(
    vm, host, other_user, django_assert_max_num_queries
):
    group = Group.objects.create(name="many")
    other_user.groups.add(group)
    for n in range(30):
        granted = VirtualMachine.objects.create(name=f"vm-{n}", owner=vm.owner, host=host)
        VmGrant.objects.create(vm=granted, group=group, role="operator")
    client = Client()
    client.force_login(other_user)
    with django_assert_max_num_queries(12):
        page = client.get("/").content.decode()
    assert "30 VMs" in page


def test_grants_through_the_api(vm, user, other_user):
    from console.apitokens import api_token_create

    def bearer(who) -> Client:
        _, raw = api_token_create(user=who, name="grants")
        return Client(headers={"Authorization": f"Bearer {raw}"})

    owner, other = bearer(user), bearer(other_user)
    url = f"/api/v1/vms/{vm.id}/grants/"
    assert other.get(url).status_code == 404  # no right: the VM does not exist for them
    made = owner.post(url, {"role": "operator", "user": other_user.username}, content_type="application/json")
    assert made.status_code == 201 and made.json()["granted_by"] == user.username
    assert other.get(f"/api/v1/vms/{vm.id}/").status_code == 200  # an operator sees it
    assert other.get(url).status_code == 403  # but does not manage who may use it
    bad = owner.post(url, {"role": "god", "user": other_user.username}, content_type="application/json")
    assert bad.status_code == 422
    nobody = owner.post(url, {"role": "viewer", "group": "nobody"}, content_type="application/json")
    assert nobody.status_code == 422
    assert owner.delete(f"{url}{made.json()['id']}/").status_code == 204
    assert other.get(f"/api/v1/vms/{vm.id}/").status_code == 404
