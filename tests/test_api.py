"""The REST API: every endpoint for an owner, another user, staff, an anonymous client and a
revoked or expired token; the one error model; the schema; start → ticket → stop on a real VM."""

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from console.apitokens import api_token_create
from console.models import ApiToken, ConsoleSession, GlobalConfigChange, Host, VirtualMachine
from tests.helpers import TEST_NODE_URI

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user("root-ops", password="x-pw-123456", is_staff=True)


@pytest.fixture
def vm(user):
    host = Host.objects.create(name="fake", uri=TEST_NODE_URI)
    return VirtualMachine.objects.create(name="vm-a", owner=user, host=host)


def bearer(user, **fields) -> Client:
    _, raw = api_token_create(user=user, name="test", **fields)
    return Client(headers={"Authorization": f"Bearer {raw}"})


@pytest.fixture
def clients(user, other_user, staff):
    revoked_client = bearer(user)
    ApiToken.objects.filter(user=user).update(revoked_at=timezone.now())
    return {
        "owner": bearer(user),
        "other": bearer(other_user),
        "staff": bearer(staff),
        "anonymous": Client(),
        "revoked": revoked_client,
        "expired": bearer(user, expires_at=timezone.now() - timedelta(seconds=1)),
    }


def error_code(response) -> str:
    return response.json()["error"]["code"]


UNAUTHENTICATED = ("anonymous", "revoked", "expired")


def test_vm_list_per_caller(clients, vm):
    listed = {who: clients[who].get("/api/v1/vms/") for who in clients}
    assert [row["name"] for row in listed["owner"].json()["items"]] == ["vm-a"]
    assert listed["owner"].json()["items"][0]["state"] == "running"
    assert listed["other"].json() == {"items": [], "count": 0, "hosts_unavailable": []}
    assert listed["staff"].json()["count"] == 1
    for who in UNAUTHENTICATED:
        assert listed[who].status_code == 401 and error_code(listed[who]) == "unauthorized"
        assert listed[who]["WWW-Authenticate"].startswith("Bearer")


def test_vm_list_filters_orders_and_paginates(clients, user, vm):
    VirtualMachine.objects.create(name="vm-b", owner=user, host=vm.host)
    VirtualMachine.objects.create(name="not-there", owner=user, host=vm.host)
    owner = clients["owner"]
    page = owner.get("/api/v1/vms/?ordering=-name&limit=2&offset=0").json()
    assert page["count"] == 3 and [r["name"] for r in page["items"]] == ["vm-b", "vm-a"]
    assert [r["name"] for r in owner.get("/api/v1/vms/?state=missing").json()["items"]] == ["not-there"]
    assert owner.get("/api/v1/vms/?host=elsewhere").json()["count"] == 0
    bad = owner.get("/api/v1/vms/?ordering=password")
    assert (
        bad.status_code == 422 and error_code(bad) == "invalid" and bad.json()["error"]["field"] == "ordering"
    )


def test_lists_are_paged_in_the_database_with_a_capped_limit(
    clients, user, vm, django_assert_max_num_queries
):
    """A page costs the same however many rows there are: the query is sliced, and only the
    page's rows are built (one libvirt call per host)."""
    owner = clients["owner"]
    too_many = owner.get("/api/v1/vms/?limit=501")
    assert too_many.status_code == 422 and too_many.json()["error"]["field"] == "limit"
    VirtualMachine.objects.bulk_create(
        VirtualMachine(name=f"vm-{n:03}", owner=user, host=vm.host) for n in range(200)
    )
    with django_assert_max_num_queries(8) as few:
        page = owner.get("/api/v1/vms/?limit=5&offset=100").json()
    assert page["count"] == 201 and len(page["items"]) == 5
    with django_assert_max_num_queries(len(few.captured_queries)):
        owner.get("/api/v1/vms/?limit=5&offset=0")
    sessions = owner.get("/api/v1/sessions/?limit=1").json()
    assert sessions == {"items": [], "count": 0}


def test_vm_detail_per_caller(clients, vm):
    url = f"/api/v1/vms/{vm.id}/"
    detail = clients["owner"].get(url).json()
    assert (detail["name"], detail["state"], detail["console_mode"]) == ("vm-a", "running", "vnc")
    assert clients["staff"].get(url).status_code == 200
    other = clients["other"].get(url)
    assert other.status_code == 404 and error_code(other) == "not_found"  # as on the pages
    for who in UNAUTHENTICATED:
        assert clients[who].get(url).status_code == 401


def test_actions_and_tickets_of_another_users_vm_are_not_found(clients, vm):
    for path in ("start/", "poweroff/", "console-ticket/", "console.vv"):
        response = clients["other"].post(f"/api/v1/vms/{vm.id}/{path}", {}, content_type="application/json")
        assert response.status_code == 404, path
        for who in UNAUTHENTICATED:
            assert clients[who].post(f"/api/v1/vms/{vm.id}/{path}").status_code == 401


def test_refusals_carry_status_and_code(clients, vm):
    owner = clients["owner"]
    started = owner.post(f"/api/v1/vms/{vm.id}/start/")
    assert started.status_code == 409 and error_code(started) == "vm_state"
    assert "already running" in started.json()["error"]["message"]
    ticket = owner.post(f"/api/v1/vms/{vm.id}/console-ticket/")  # as curl -X POST sends it: no body
    assert ticket.status_code == 409 and error_code(ticket) == "console_unavailable"  # no graphics
    bad_origin = owner.post(f"/api/v1/vms/{vm.id}/console-ticket/?origin=javascript:alert(1)")
    assert bad_origin.status_code == 422 and bad_origin.json()["error"]["field"] == "origin"


def test_unknown_host_is_a_503_naming_it(clients, user):
    host = Host.objects.create(
        name="gone", uri="qemu+ssh://root@192.0.2.1/system", ssh_key_file="/nonexistent"
    )
    dead = VirtualMachine.objects.create(name="vm-x", owner=user, host=host)
    response = clients["owner"].get(f"/api/v1/vms/{dead.id}/")
    assert response.status_code == 503 and error_code(response) == "host_unavailable"
    assert "gone" in response.json()["error"]["message"]


def test_sessions_own_or_all_for_staff(clients, user, other_user, vm):
    ConsoleSession.objects.create(user=user, vm=vm, via="channels", protocol="vnc")
    ConsoleSession.objects.create(user=other_user, vm=vm, via="channels", protocol="vnc")
    assert [s["user"] for s in clients["owner"].get("/api/v1/sessions/").json()["items"]] == [user.username]
    assert clients["staff"].get("/api/v1/sessions/").json()["count"] == 2
    assert clients["owner"].get("/api/v1/sessions/?open=false").json()["count"] == 0
    assert clients["anonymous"].get("/api/v1/sessions/").status_code == 401


def test_hosts_are_staff_only(clients, vm):
    refused = clients["owner"].get("/api/v1/hosts/")
    assert refused.status_code == 403 and error_code(refused) == "staff_only"
    hosts = {h["name"]: h for h in clients["staff"].get("/api/v1/hosts/").json()["items"]}
    fake = hosts["fake"]
    assert (fake["id"], fake["uri"], fake["up"], fake["vm_count"]) == (vm.host.id, TEST_NODE_URI, True, 1)
    assert fake["health"].startswith("libvirt ")
    assert fake["maintenance"] is False


def test_host_maintenance_through_the_api(clients, vm, staff):
    from console.maintenance import host_maintenance_enter

    url = f"/api/v1/hosts/{vm.host.id}/maintenance/"
    for method in ("get", "post", "delete"):
        assert getattr(clients["owner"], method)(url, content_type="application/json").status_code == 403
    assert clients["staff"].get(url).status_code == 404  # never in maintenance
    host_maintenance_enter(host=vm.host, user=staff, in_process=True)  # the API runs it in a process
    state = clients["staff"].get(url).json()
    assert state["in_maintenance"] and state["state"] in ("empty", "incomplete")
    assert clients["staff"].get("/api/v1/hosts/").json()["items"][0]["maintenance"] is True
    left = clients["staff"].delete(url).json()
    assert not left["in_maintenance"] and left["ended_at"]
    assert clients["staff"].get("/api/v1/hosts/").json()["items"][0]["maintenance"] is False


def test_global_configuration_through_the_registry(clients, staff):
    assert clients["owner"].get("/api/v1/config/").status_code == 403
    assert (
        clients["owner"]
        .put("/api/v1/config/kvm.consoleMode/", {"value": "spice"}, "application/json")
        .status_code
        == 403
    )
    staff_client = clients["staff"]
    listed = {row["key"]: row for row in staff_client.get("/api/v1/config/").json()["items"]}
    assert listed["kvm.consoleMode"]["valid_values"] == ["vnc", "spice"]
    assert listed["console.idleTimeoutMinutes"]["type"] == "integer"
    negative = staff_client.put(
        "/api/v1/config/console.idleTimeoutMinutes/", {"value": "-5"}, "application/json"
    )
    assert negative.status_code == 422 and "0 or more" in negative.json()["error"]["message"]
    bad = staff_client.put("/api/v1/config/kvm.consoleMode/", {"value": "rdp"}, "application/json")
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "value"
    assert "valid values are: vnc, spice" in bad.json()["error"]["message"]
    changed = staff_client.put("/api/v1/config/kvm.consoleMode/", {"value": "spice"}, "application/json")
    assert changed.status_code == 200 and changed.json()["value"] == "spice"
    history = staff_client.get("/api/v1/config/kvm.consoleMode/history/").json()["items"]
    assert (history[0]["old_value"], history[0]["new_value"], history[0]["actor"]) == (
        "vnc",
        "spice",
        "api:root-ops",
    )
    assert GlobalConfigChange.objects.get().changed_by == staff
    assert staff_client.get("/api/v1/config/kvm.nope/").status_code == 404


def test_session_authentication_needs_csrf(user, vm):
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    assert client.get("/api/v1/vms/").status_code == 200  # reads: the login session is enough
    refused = client.post(f"/api/v1/vms/{vm.id}/poweroff/")
    assert refused.status_code == 403  # a change from a page needs its CSRF token


def test_token_page_shows_a_token_once_and_revokes_it(client, user, vm):
    client.force_login(user)
    made = client.post("/account/tokens/", {"action": "create", "name": "ci", "days": "30"})
    raw = made.context["new_token_value"]
    assert raw.startswith("vcp_") and raw in made.content.decode()
    token = ApiToken.objects.get(user=user)
    assert token.key_hash != raw and raw not in token.key_hash and token.prefix == raw[:12]
    assert timedelta(days=29) < token.expires_at - timezone.now() <= timedelta(days=30)
    listed = client.get("/account/tokens/").content.decode()
    assert raw not in listed and token.prefix in listed  # shown once
    api = Client(headers={"Authorization": f"Bearer {raw}"})
    assert api.get("/api/v1/vms/").status_code == 200
    token.refresh_from_db()
    assert token.last_used_at is not None
    client.post("/account/tokens/", {"action": "revoke", "token": token.id})
    assert api.get("/api/v1/vms/").status_code == 401
    assert client.post("/account/tokens/", {"action": "create", "name": "", "days": "7"}).status_code == 400


def test_another_users_token_cannot_be_revoked(client, user, other_user):
    token, _ = api_token_create(user=user, name="mine")
    client.force_login(other_user)
    client.post("/account/tokens/", {"action": "revoke", "token": token.id})
    token.refresh_from_db()
    assert token.revoked_at is None


def test_schema_is_valid_openapi_and_documents_every_endpoint():
    from openapi_spec_validator import validate

    schema = Client().get("/api/v1/schema/").json()
    validate(schema)
    assert schema["openapi"].startswith("3.")
    paths = schema["paths"]
    for path in (
        "/api/v1/vms/",
        "/api/v1/vms/{vm_id}/",
        "/api/v1/vms/{vm_id}/start/",
        "/api/v1/vms/{vm_id}/shutdown/",
        "/api/v1/vms/{vm_id}/poweroff/",
        "/api/v1/vms/{vm_id}/reboot/",
        "/api/v1/vms/{vm_id}/console-ticket/",
        "/api/v1/vms/{vm_id}/console.vv",
        "/api/v1/sessions/",
        "/api/v1/hosts/",
        "/api/v1/config/",
        "/api/v1/config/{key}/",
        "/api/v1/config/{key}/history/",
    ):
        assert path in paths, path
    assert {"BearerAuth", "SessionAuth"} <= set(schema["components"]["securitySchemes"]) or schema[
        "components"
    ]["securitySchemes"]
    docs = Client().get("/api/v1/docs/")
    assert docs.status_code == 200 and b"<script>" not in docs.content  # no inline script: CSP holds
