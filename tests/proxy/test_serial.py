"""The serial console's tickets, page and WebSocket checks, against libvirt's test driver
(the real console stream, on the real guest, is in tests/e2e/test_serial_console.py)."""

import json
import re

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from console.errors import ConsoleUnavailable, End
from console.models import ConsoleSession, ConsoleTicket, Host, VirtualMachine
from console.tickets import serial_ticket_issue
from portal.asgi import application
from portal.security import content_security_policy
from tests.helpers import HOST, ORIGIN, TEST_NODE_URI, make_ticket, session_cookie

pytestmark = pytest.mark.django_db(transaction=True)


async def serial_socket(vm_id, token, user, origin=ORIGIN):
    cookie = await database_sync_to_async(session_cookie)(user)
    comm = WebsocketCommunicator(
        application,
        f"/ws/serial/{vm_id}/?token={token}",
        headers=[(b"origin", origin.encode()), HOST, cookie],
    )
    comm.scope["client"] = ["127.0.0.1", 50000]
    return comm


async def refusal_of(comm) -> tuple[int, str]:
    """The close code and the reason the page is told in words, before the close."""
    connected, _ = await comm.connect()
    assert connected
    said = json.loads(await comm.receive_from())
    closed = await comm.receive_output()
    assert closed["type"] == "websocket.close"
    assert said["code"] == closed["code"]  # a close that does not finish reaches the page as 1006
    return closed["code"], said["reason"]


def test_no_serial_ticket_for_a_domain_without_a_serial_console(user, vm):
    with pytest.raises(ConsoleUnavailable, match="has no serial console"):
        serial_ticket_issue(user=user, vm=vm, origin=ORIGIN, session_key="")
    assert not ConsoleTicket.objects.exists()


def test_no_serial_ticket_for_another_users_vm(other_user, vm):
    with pytest.raises(PermissionError):
        serial_ticket_issue(user=other_user, vm=vm, origin=ORIGIN, session_key="")


async def test_a_graphical_consoles_ticket_does_not_open_the_serial_console(user, vm):
    token = await database_sync_to_async(make_ticket)(user, vm, 5900)
    code, reason = await refusal_of(await serial_socket(vm.id, token, user))
    assert (code, reason) == (End.WRONG_PATH, End.WRONG_PATH.message)


async def test_foreign_origin_is_refused(user, vm):
    token = await database_sync_to_async(make_ticket)(user, vm, 0, kind=ConsoleTicket.Kind.SERIAL)
    code, _ = await refusal_of(await serial_socket(vm.id, token, user, origin="http://evil.example"))
    assert code == End.FOREIGN_ORIGIN


async def test_another_users_ticket_is_refused(user, other_user, vm):
    token = await database_sync_to_async(make_ticket)(user, vm, 0, kind=ConsoleTicket.Kind.SERIAL)
    code, _ = await refusal_of(await serial_socket(vm.id, token, other_user))
    assert code == End.OTHER_USER


async def test_a_console_libvirt_cannot_open_is_refused_in_words_and_recorded(user, vm):
    # The test driver has no console streams: libvirt's refusal reaches the page, and the
    # attempt is recorded as a session that ended at once.
    token = await database_sync_to_async(make_ticket)(
        user, vm, 0, kind=ConsoleTicket.Kind.SERIAL, protocol="serial", max_connections=1
    )
    comm = await serial_socket(vm.id, token, user)
    code, reason = await refusal_of(comm)
    assert code == 4010 and "not supported" in reason
    await comm.disconnect()
    session = await database_sync_to_async(ConsoleSession.objects.get)()
    assert session.protocol == "serial" and session.ended_at is not None
    assert session.end_reason == End.UNREACHABLE.reason


def test_serial_page_allows_xterms_styles_by_a_nonce_of_its_own(client, user, vm):
    client.force_login(user)
    nonces = []
    for _ in range(2):
        response = client.get(f"/vms/{vm.id}/serial/")
        assert response.status_code == 200
        policy = response["Content-Security-Policy"]
        nonce = re.search(r"style-src 'self' 'nonce-([A-Za-z0-9_-]+)'", policy)[1]
        assert f'<meta name="style-nonce" content="{nonce}">' in response.content.decode()
        assert "script-src 'self';" in policy  # scripts stay as strict as on every page
        nonces.append(nonce)
    assert nonces[0] != nonces[1]
    assert "nonce-" not in content_security_policy()  # every other page: no inline <style> at all


def test_serial_page_of_a_stopped_vm_says_so(client, user):
    host = Host.objects.create(name="fake", uri=TEST_NODE_URI)
    vm = VirtualMachine.objects.create(name="not-defined-here", owner=user, host=host)
    client.force_login(user)
    response = client.get(f"/vms/{vm.id}/serial/")
    assert response.status_code == 409
    assert "start it to open its serial console" in response.content.decode()


def test_serial_page_of_another_users_vm_is_not_found(client, other_user, vm):
    client.force_login(other_user)
    assert client.get(f"/vms/{vm.id}/serial/").status_code == 404
    assert client.post(f"/vms/{vm.id}/serial/ticket/").status_code == 404
