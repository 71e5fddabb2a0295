import pytest
from django.urls import reverse

from console.globalconfig import CONSOLE_MODE, config_value
from console.models import GlobalConfigChange, GlobalConfigValue

pytestmark = pytest.mark.django_db


def _row():
    return GlobalConfigValue.objects.get(category="kvm", name="consoleMode")


def test_changelist_shows_value_default_valid_values_and_description(client, staff_user):
    client.force_login(staff_user)
    page = client.get(reverse("admin:console_globalconfigvalue_changelist")).content.decode()
    assert "kvm.consoleMode" in page
    assert "vnc (default)" in page
    assert "vnc, spice" in page
    assert "spice enables SPICE connections" in page


def test_edit_validates_and_records(client, staff_user):
    client.force_login(staff_user)
    url = reverse("admin:console_globalconfigvalue_change", args=[_row().pk])
    refused = client.post(url, {"value": "rdp"})
    assert refused.status_code == 200
    assert "valid values are: vnc, spice" in refused.content.decode()
    assert config_value(CONSOLE_MODE) == "vnc"

    accepted = client.post(url, {"value": "spice"}, follow=True)
    assert config_value(CONSOLE_MODE) == "spice"
    change = GlobalConfigChange.objects.get()
    assert (change.old_value, change.new_value, change.changed_by) == ("vnc", "spice", staff_user)
    assert "No running VM needs a restart" in accepted.content.decode()


def test_reset_action(client, staff_user):
    client.force_login(staff_user)
    row = _row()
    row.value = "spice"
    row.save()
    client.post(
        reverse("admin:console_globalconfigvalue_changelist"),
        {"action": "reset_to_default", "_selected_action": [row.pk]},
    )
    assert config_value(CONSOLE_MODE) == "vnc"
    assert GlobalConfigChange.objects.get().actor == f"admin:{staff_user.username}"


def test_non_staff_cannot_change_settings(client, user):
    client.force_login(user)
    url = reverse("admin:console_globalconfigvalue_change", args=[_row().pk])
    response = client.post(url, {"value": "spice"})
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    assert config_value(CONSOLE_MODE) == "vnc"


def test_staff_see_console_sessions(client, staff_user, user):
    from console.models import ConsoleSession, Host, VirtualMachine

    host = Host.objects.create(name="fake", uri="test:///default")
    vm = VirtualMachine.objects.create(name="vm-a", owner=user, host=host)
    ConsoleSession.objects.create(
        user=user, vm=vm, via="channels", protocol="vnc", client_address="127.0.0.9"
    )
    client.force_login(staff_user)
    page = client.get(reverse("admin:console_consolesession_changelist")).content.decode()
    assert "127.0.0.9" in page and "vm-a" in page


def test_reset_needs_the_change_permission(client, django_user_model):
    from django.contrib.auth.models import Permission

    viewer = django_user_model.objects.create_user("viewer", password="viewer-pw-123", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_globalconfigvalue"))
    client.force_login(viewer)
    url = reverse("admin:console_globalconfigvalue_changelist")
    page = client.get(url).content.decode()
    assert "reset_to_default" not in page  # not offered
    from console.globalconfig import config_set

    config_set(key=CONSOLE_MODE, value="spice", actor="test")
    response = client.post(url, {"action": "reset_to_default", "_selected_action": [_row().pk]})
    assert config_value(CONSOLE_MODE) == "spice"  # and not carried out when posted anyway
    assert response.status_code in (200, 302)


def test_host_maintenances_list_what_moved_and_what_stayed(client, staff_user):
    from console.models import Host, HostMaintenance

    host = Host.objects.create(name="fake", uri="test:///default")
    HostMaintenance.objects.create(
        host=host,
        state=HostMaintenance.State.INCOMPLETE,
        summary=[{"vm": "vm-a", "moved_to": "hv2"}, {"vm": "vm-<b>", "stayed": "no other host takes it"}],
    )
    client.force_login(staff_user)
    page = client.get(reverse("admin:console_hostmaintenance_changelist")).content.decode()
    assert "vm-a → hv2" in page and "vm-&lt;b&gt;: no other host takes it" in page
