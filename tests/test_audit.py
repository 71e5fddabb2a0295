"""The audit trail: logins (and refused ones), VM actions, console sessions, shares, settings
changes in one list, newest first, filtered by user, VM and time, as JSON and CSV (a formula
never reaches a spreadsheet as one), staff only; admin exports the selected VMs' trail."""

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from console.apitokens import api_token_create
from console.globalconfig import CONSOLE_MODE, config_set
from console.models import ConsoleSession, ConsoleShare, Host, VirtualMachine, VmEvent

pytestmark = pytest.mark.django_db


def bearer(user) -> Client:
    _, raw = api_token_create(user=user, name="audit")
    return Client(headers={"Authorization": f"Bearer {raw}"})


@pytest.fixture
def trail(user, other_user, staff_user):
    host = Host.objects.create(name="fake", uri="test:///default")
    vm = VirtualMachine.objects.create(name="vm-a", owner=user, host=host)
    other = VirtualMachine.objects.create(name="vm-b", owner=other_user, host=host)
    Client().post("/accounts/login/", {"username": user.username, "password": "wrong"})
    VmEvent.objects.create(vm=vm, user=user, action="start", detail="console vnc")
    VmEvent.objects.create(vm=other, user=other_user, action='=HYPERLINK("x")', detail="@evil")
    session = ConsoleSession.objects.create(user=user, vm=vm, via="channels", protocol="vnc")
    ConsoleSession.objects.filter(pk=session.pk).update(ended_at=timezone.now(), end_reason="client closed")
    ConsoleShare.objects.create(vm=vm, viewer=other_user, shared_by=user)
    config_set(key=CONSOLE_MODE, value="spice", actor=staff_user.username)
    return vm


def test_the_trail_by_user_vm_and_time(trail, user, staff_user):
    api = bearer(staff_user)
    rows = api.get("/api/v1/audit/").json()
    kinds = {(row["kind"], row["action"]) for row in rows}
    assert {("auth", "login refused"), ("vm", "start"), ("console", "open"), ("console", "close")} <= kinds
    assert {("share", "share"), ("setting", "change")} <= kinds
    assert [row["at"] for row in rows] == sorted((row["at"] for row in rows), reverse=True)
    mine = api.get(f"/api/v1/audit/?user={user.username}").json()
    assert mine and all(row["user"] == user.username for row in mine)
    on_vm = api.get("/api/v1/audit/?vm=vm-a").json()
    assert on_vm and all(row["vm"] == "vm-a" for row in on_vm)
    future = (timezone.now() + timedelta(minutes=1)).isoformat()
    assert api.get("/api/v1/audit/", {"since": future}).json() == []
    assert len(api.get("/api/v1/audit/?limit=2").json()) == 2


def test_csv_quotes_formulas_and_only_staff_may_read(trail, user, staff_user):
    csv = bearer(staff_user).get("/api/v1/audit/?format=csv")
    assert csv["Content-Type"].startswith("text/csv")
    text = csv.content.decode()
    assert text.startswith("at,kind,action,user,vm,detail")
    assert "'=HYPERLINK" in text and "'@evil" in text and ",=HYPERLINK" not in text
    refused = bearer(user).get("/api/v1/audit/")
    assert refused.status_code == 403
    assert bearer(staff_user).get("/api/v1/audit/?format=xml").status_code == 422


def test_logins_and_admin_export(client, trail, staff_user):
    client.post("/accounts/login/", {"username": staff_user.username, "password": "root-pw-123"})
    export = client.post(
        "/admin/console/virtualmachine/",
        {"action": "audit_export", "_selected_action": [trail.pk]},
    )
    text = export.content.decode()
    assert export["Content-Disposition"] == 'attachment; filename="audit.csv"'
    assert "vm-a" in text and "vm-b" not in text
    rows = bearer(staff_user).get("/api/v1/audit/?user=root").json()
    assert any(row["kind"] == "auth" and row["action"] == "login" for row in rows)
