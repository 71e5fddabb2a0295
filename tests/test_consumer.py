"""The WebSocket console proxy, with WebsocketCommunicator against a local TCP echo server."""

import asyncio

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser
from django.test import Client

from console.models import ConsoleSession, ConsoleTicket, Host, VirtualMachine
from console.tickets import Refusal
from portal.asgi import application
from tests.helpers import TEST_NODE_URI, EchoServer, make_ticket

pytestmark = pytest.mark.django_db(transaction=True)

ORIGIN = (b"origin", b"http://127.0.0.1:8000")
HOST = (b"host", b"127.0.0.1:8000")


@pytest.fixture
def vms(user):
    host = Host.objects.create(name="fake", uri=TEST_NODE_URI)
    return (
        VirtualMachine.objects.create(name="vm-a", owner=user, host=host),
        VirtualMachine.objects.create(name="vm-b", owner=user, host=host),
    )


def session_cookie(user, session_key: str | None = None) -> tuple[bytes, bytes]:
    """The Cookie header of a browser logged in as `user` (none for AnonymousUser)."""
    if not user.is_authenticated:
        return (b"cookie", b"")
    if session_key is None:
        session_key = login_session(user)
    return (b"cookie", f"sessionid={session_key}".encode())


def login_session(user) -> str:
    """A new login session of `user`: its key."""
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


async def communicator(
    vm_id, token, user, headers=(ORIGIN, HOST), subprotocols=("binary",), session_key=None
):
    cookie = await database_sync_to_async(session_cookie)(user, session_key)
    comm = WebsocketCommunicator(
        application,
        f"/ws/console/{vm_id}/?token={token}",
        headers=[*headers, cookie],
        subprotocols=list(subprotocols),
    )
    comm.scope["client"] = ["127.0.0.1", 50000]
    return comm


async def test_relays_bytes_both_ways_and_records_the_session(user, vms):
    async with EchoServer() as echo:
        token = await database_sync_to_async(make_ticket)(user, vms[0], echo.port)
        comm = await communicator(vms[0].id, token, user)
        connected, subprotocol = await comm.connect()
        assert connected and subprotocol == "binary"
        assert await comm.receive_from() == b"HELLO"
        payload = bytes(range(256)) * 400
        await comm.send_to(bytes_data=payload)
        echoed = b""
        while len(echoed) < len(payload):
            echoed += await comm.receive_from()
        assert echoed == payload
        await comm.disconnect()
        session = await database_sync_to_async(ConsoleSession.objects.get)()
        assert (session.bytes_to_client, session.bytes_from_client) == (5 + len(payload), len(payload))
        assert session.ended_at is not None and session.end_reason == "client closed"
        assert session.client_address == "127.0.0.1" and session.via == "channels"
        await asyncio.sleep(0.05)
        assert echo.open == 0  # the VM side was closed too
    assert {t for t in asyncio.all_tasks() if not t.done()} == {asyncio.current_task()}


async def test_console_closing_ends_the_session(user, vms):
    async with EchoServer() as echo:
        token = await database_sync_to_async(make_ticket)(user, vms[0], echo.port)
        comm = await communicator(vms[0].id, token, user)
        await comm.connect()
        assert await comm.receive_from() == b"HELLO"
        echo.writers[0].close()  # the VM shuts down
        closed = await comm.receive_output()
        assert closed == {"type": "websocket.close", "code": 4011, "reason": "console closed"}
        await comm.disconnect(code=4011)  # what Daphne does once the close handshake is done
        session = await database_sync_to_async(ConsoleSession.objects.get)()
        assert session.end_reason == "console closed"
    assert {t for t in asyncio.all_tasks() if not t.done()} == {asyncio.current_task()}


async def admitted(comm) -> None:
    """Connect, and wait for the console's greeting: the handshake is accepted before the
    checks, so only data from the console says they passed (and the session is recorded)."""
    assert (await comm.connect())[0]
    assert await comm.receive_from() == b"HELLO"


async def refused_with(comm):
    connected, _ = await comm.connect()
    assert connected  # accepted only to say why
    message = await comm.receive_output()
    assert message["type"] == "websocket.close"
    await comm.disconnect(code=message["code"])
    return message["code"]


async def test_each_refusal_has_its_code_and_relays_nothing(user, other_user, vms):
    vm_a, vm_b = vms
    async with EchoServer() as echo:
        new = database_sync_to_async(make_ticket)
        cases = [
            (
                Refusal.NOT_LOGGED_IN,
                await communicator(vm_a.id, await new(user, vm_a, echo.port), AnonymousUser()),
            ),
            (Refusal.OTHER_USER, await communicator(vm_a.id, await new(user, vm_a, echo.port), other_user)),
            (
                Refusal.EXPIRED,
                await communicator(vm_a.id, await new(user, vm_a, echo.port, seconds=-1), user),
            ),
            (Refusal.OTHER_VM, await communicator(vm_b.id, await new(user, vm_a, echo.port), user)),
            (
                Refusal.FOREIGN_ORIGIN,
                await communicator(
                    vm_a.id,
                    await new(user, vm_a, echo.port),
                    user,
                    headers=[(b"origin", b"https://evil.example"), HOST],
                ),
            ),
            (
                Refusal.FOREIGN_ORIGIN,
                await communicator(vm_a.id, await new(user, vm_a, echo.port), user, headers=[HOST]),
            ),
            (Refusal.UNKNOWN_TICKET, await communicator(vm_a.id, "made-up-token", user)),
            (Refusal.UNKNOWN_TICKET, await communicator(vm_a.id, "", user)),
        ]
        for refusal, comm in cases:
            assert await refused_with(comm) == refusal.value, refusal
        assert echo.connections == 0
        assert not await database_sync_to_async(ConsoleSession.objects.exists)()
        # Refusals use up nothing: the tickets still have every connection left.
        counts = await database_sync_to_async(list)(
            ConsoleTicket.objects.values_list("connections", flat=True)
        )
        assert set(counts) == {0}
    assert {t for t in asyncio.all_tasks() if not t.done()} == {asyncio.current_task()}


async def test_a_ticket_admits_several_connections_up_to_its_cap(user, vms):
    async with EchoServer() as echo:
        token = await database_sync_to_async(make_ticket)(user, vms[0], echo.port, max_connections=2)
        first, second = await communicator(vms[0].id, token, user), await communicator(vms[0].id, token, user)
        for comm in (first, second):
            assert (await comm.connect())[0]
            assert await comm.receive_from() == b"HELLO"
        assert await refused_with(await communicator(vms[0].id, token, user)) == Refusal.EXHAUSTED.value
        for comm in (first, second):
            await comm.disconnect()
        assert echo.connections == 2


async def test_revoked_access_refuses_an_issued_ticket(user, other_user, vms):
    async with EchoServer() as echo:
        token = await database_sync_to_async(make_ticket)(user, vms[0], echo.port)
        comm = await communicator(vms[0].id, token, user)
        await database_sync_to_async(VirtualMachine.objects.filter(pk=vms[0].pk).update)(owner=other_user)
        assert await refused_with(comm) == Refusal.FORBIDDEN.value
        deactivated = await database_sync_to_async(make_ticket)(other_user, vms[0], echo.port)
        comm = await communicator(vms[0].id, deactivated, other_user)
        await database_sync_to_async(type(user).objects.filter(pk=other_user.pk).update)(is_active=False)
        assert await refused_with(comm) == Refusal.NOT_LOGGED_IN.value  # Django's login ends first
        assert echo.connections == 0


async def test_unreachable_console(user, vms):
    async with EchoServer() as echo:
        port = echo.port
    token = await database_sync_to_async(make_ticket)(user, vms[0], port)  # nothing listens now
    assert await refused_with(await communicator(vms[0].id, token, user)) == 4010


# -- the right to a console, checked while it stays open ---------------------------------------


def _logout(user, vm, session_key):
    from django.contrib.sessions.models import Session

    Session.objects.filter(session_key=session_key).delete()


def _new_password(user, vm, session_key):
    user.set_password("a-new-password-456")
    user.save()


def _deactivate(user, vm, session_key):
    type(user).objects.filter(pk=user.pk).update(is_active=False)


def _give_vm_away(user, vm, session_key):
    other = type(user).objects.create_user("bob", password="bob-pw-123")
    VirtualMachine.objects.filter(pk=vm.pk).update(owner=other)


def _admin_ends_it(user, vm, session_key):
    from console.sessions import console_session_end_request

    admin = type(user).objects.create_user("ops", password="ops-pw-123", is_staff=True)
    assert console_session_end_request(session_id=ConsoleSession.objects.get().pk, by=admin)


@pytest.mark.parametrize(
    "change, refusal",
    [
        (_admin_ends_it, Refusal.ENDED_BY_ADMIN),
        (_logout, Refusal.LOGGED_OUT),
        (_new_password, Refusal.PASSWORD_CHANGED),
        (_deactivate, Refusal.DEACTIVATED),
        (_give_vm_away, Refusal.FORBIDDEN),
    ],
)
async def test_an_open_console_ends_when_the_right_to_it_ends(user, vms, settings, change, refusal):
    settings.CONSOLE_RECHECK_SECONDS = 0.2
    async with EchoServer() as echo:
        key = await database_sync_to_async(login_session)(user)
        token = await database_sync_to_async(make_ticket)(user, vms[0], echo.port, session_key=key)
        comm = await communicator(vms[0].id, token, user, session_key=key)
        assert (await comm.connect())[0]
        assert await comm.receive_from() == b"HELLO"
        await asyncio.sleep(0.5)  # several checks pass while the right holds
        await comm.send_to(bytes_data=b"still here")
        assert await comm.receive_from() == b"still here"

        await database_sync_to_async(change)(user, vms[0], key)
        closed = await comm.receive_output(timeout=3)
        assert closed == {"type": "websocket.close", "code": refusal.value, "reason": refusal.message}
        await comm.disconnect(code=refusal.value)
        session = await database_sync_to_async(ConsoleSession.objects.get)()
        assert session.ended_at is not None and session.end_reason == refusal.message
        await asyncio.sleep(0.05)
        assert echo.open == 0
    assert {t for t in asyncio.all_tasks() if not t.done()} == {asyncio.current_task()}


async def test_open_consoles_send_heartbeats(user, vms, settings):
    settings.CONSOLE_RECHECK_SECONDS = 0.2
    async with EchoServer() as echo:
        token = await database_sync_to_async(make_ticket)(user, vms[0], echo.port)
        comm = await communicator(vms[0].id, token, user)
        assert (await comm.connect())[0]
        assert await comm.receive_from() == b"HELLO"  # admitted: the console greeted
        first = (await database_sync_to_async(ConsoleSession.objects.get)()).seen_at
        await comm.send_to(bytes_data=b"12345")
        await asyncio.sleep(0.6)
        later = await database_sync_to_async(ConsoleSession.objects.get)()
        assert later.seen_at > first
        # the live consoles page sees the bytes so far, before the session ends
        assert (later.bytes_to_client, later.bytes_from_client) == (10, 5) and later.ended_at is None
        await comm.disconnect()


# -- what a ticket admits ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "origin",
    [
        b"http://127.0.0.1:8001",  # same host, another port
        b"https://127.0.0.1:8000",  # same host and port, another scheme
        b"http://127.0.0.1",  # default port: 80, not 8000
        b"http://localhost:8000",  # another allowed host name than the one the page used
        b"null",
        b"http://[::1",
        b"http://127.0.0.1:99999",
        b"http://127.0.0.1:8000/console",
        b"http://user@127.0.0.1:8000",
        b"\xff\xfe",
        b"",
    ],
)
async def test_only_the_portals_own_origin_is_admitted(user, vms, origin):
    async with EchoServer() as echo:
        token = await database_sync_to_async(make_ticket)(user, vms[0], echo.port)
        comm = await communicator(vms[0].id, token, user, headers=[(b"origin", origin), HOST])
        assert await refused_with(comm) == Refusal.FOREIGN_ORIGIN.value
        assert echo.connections == 0


async def test_a_ticket_opens_only_from_the_origin_it_was_issued_to(user, vms, settings):
    settings.CSRF_TRUSTED_ORIGINS = ["https://portal.example"]
    async with EchoServer() as echo:
        token = await database_sync_to_async(make_ticket)(user, vms[0], echo.port)  # for :8000
        trusted = [(b"origin", b"https://portal.example"), HOST]
        assert await refused_with(await communicator(vms[0].id, token, user, headers=trusted)) == 4001
        comm = await communicator(vms[0].id, token, user)
        await admitted(comm)
        await comm.disconnect()


@pytest.mark.parametrize("kind", ["websockify", "vv"])
async def test_a_ticket_for_another_proxy_is_refused(user, vms, kind):
    async with EchoServer() as echo:
        token = await database_sync_to_async(make_ticket)(user, vms[0], echo.port, kind=kind)
        assert await refused_with(await communicator(vms[0].id, token, user)) == Refusal.WRONG_PATH.value
        assert echo.connections == 0


def _restart_domain(vm) -> None:
    from console.hypervisor import hypervisor_for

    hypervisor = hypervisor_for(vm.host)
    hypervisor.destroy(vm.name)
    hypervisor._call(lambda conn: conn.lookupByName(vm.name).create())


async def test_a_ticket_does_not_survive_a_restart_of_its_vm(user, vms):
    async with EchoServer() as echo:
        token = await database_sync_to_async(make_ticket)(user, vms[1], echo.port)
        await database_sync_to_async(_restart_domain)(vms[1])
        # The new domain may well listen on the same port: the ticket must not open it.
        comm = await communicator(vms[1].id, token, user)
        assert await refused_with(comm) == Refusal.VM_RESTARTED.value
        assert echo.connections == 0


async def test_consoles_per_user_are_capped(user, vms):
    from console.globalconfig import MAX_SESSIONS_PER_USER, config_set

    await database_sync_to_async(config_set)(key=MAX_SESSIONS_PER_USER, value="1", actor="test")
    async with EchoServer() as echo:
        first = await database_sync_to_async(make_ticket)(user, vms[0], echo.port)
        second = await database_sync_to_async(make_ticket)(user, vms[0], echo.port)
        channel = await communicator(vms[0].id, first, user)
        assert (await channel.connect())[0]
        assert await channel.receive_from()  # admitted: the console greeted
        # More channels of the same console are fine (spice-html5 opens several)...
        another_channel = await communicator(vms[0].id, first, user)
        assert (await another_channel.connect())[0]
        assert await another_channel.receive_from()
        # ...another console is not, until one closes.
        refused = await refused_with(await communicator(vms[0].id, second, user))
        assert refused == Refusal.TOO_MANY_CONSOLES.value
        await channel.disconnect()
        await another_channel.disconnect()
        comm = await communicator(vms[0].id, second, user)
        await admitted(comm)
        await comm.disconnect()


# -- idle and length limits (console.idleTimeoutMinutes, console.maxSessionMinutes) -------------


def _set(key, value):
    from console.globalconfig import config_set

    config_set(key=key, value=value, actor="test")


def _age_ticket(token, **fields):
    from console.tickets import token_hash

    ConsoleTicket.objects.filter(token_hash=token_hash(token)).update(**fields)


async def test_an_idle_console_is_ended_and_input_keeps_one_open(user, vms, settings):
    from datetime import timedelta

    from django.utils import timezone

    settings.CONSOLE_RECHECK_SECONDS = 0.2
    await database_sync_to_async(_set)("console.idleTimeoutMinutes", "1")
    long_ago = timezone.now() - timedelta(minutes=5)
    async with EchoServer() as echo:
        idle_token = await database_sync_to_async(make_ticket)(user, vms[0], echo.port)
        busy_token = await database_sync_to_async(make_ticket)(user, vms[0], echo.port)
        idle = await communicator(vms[0].id, idle_token, user)
        busy = await communicator(vms[0].id, busy_token, user)
        for comm in (idle, busy):
            assert (await comm.connect())[0]
            assert await comm.receive_from() == b"HELLO"
        # The VNC page says the user is active: kept to the proxy, never relayed to the VM.
        await busy.send_to(text_data='{"activity":1}')
        await asyncio.sleep(0.5)
        await database_sync_to_async(_age_ticket)(idle_token, created_at=long_ago)
        await database_sync_to_async(_age_ticket)(busy_token, created_at=long_ago)
        closed = await idle.receive_output(timeout=3)
        assert closed["code"] == Refusal.IDLE.value
        await busy.send_to(bytes_data=b"still here")
        assert await busy.receive_from() == b"still here"  # the active one stays, and no text reached it
        await idle.disconnect()
        await busy.disconnect()


async def test_input_on_a_spice_inputs_channel_counts_as_activity(user, vms, settings):
    settings.CONSOLE_RECHECK_SECONDS = 0.2
    link = b"REDQ" + bytes(16) + bytes([3]) + bytes(20)  # SpiceLinkHeader, then channel type 3
    async with EchoServer() as echo:
        token = await database_sync_to_async(make_ticket)(user, vms[0], echo.port, protocol="spice")
        comm = await communicator(vms[0].id, token, user)
        assert (await comm.connect())[0]
        await comm.receive_from()
        await comm.send_to(bytes_data=link)
        await comm.receive_from()
        assert (await database_sync_to_async(ConsoleTicket.objects.get)()).last_input_at is None
        await comm.send_to(bytes_data=b"a key")
        await comm.receive_from()
        await asyncio.sleep(0.5)
        assert (await database_sync_to_async(ConsoleTicket.objects.get)()).last_input_at is not None
        await comm.disconnect()


async def test_a_console_is_ended_at_its_maximum_length(user, vms, settings):
    from datetime import timedelta

    from django.utils import timezone

    settings.CONSOLE_RECHECK_SECONDS = 0.2
    await database_sync_to_async(_set)("console.maxSessionMinutes", "10")
    async with EchoServer() as echo:
        token = await database_sync_to_async(make_ticket)(user, vms[0], echo.port)
        comm = await communicator(vms[0].id, token, user)
        assert (await comm.connect())[0]
        await comm.receive_from()
        await comm.send_to(text_data='{"activity":1}')
        await asyncio.sleep(0.5)  # active, and young: it stays
        await database_sync_to_async(_age_ticket)(token, created_at=timezone.now() - timedelta(minutes=11))
        closed = await comm.receive_output(timeout=3)
        assert closed["code"] == Refusal.TOO_LONG.value
        await comm.disconnect()


# -- metrics ---------------------------------------------------------------------------------------


def _scrape(client) -> dict:
    from prometheus_client.parser import text_string_to_metric_families

    response = client.get("/metrics")
    assert response.status_code == 200, response.content
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


async def test_metrics_count_a_session_opened_and_closed_and_refusals(user, vms, django_user_model, settings):
    from django.test import Client

    staff = await database_sync_to_async(django_user_model.objects.create_user)(
        "ops", password="ops-pw-123", is_staff=True
    )
    client = Client()
    await database_sync_to_async(client.force_login)(staff)
    before = await database_sync_to_async(_scrape)(client)
    async with EchoServer() as echo:
        token = await database_sync_to_async(make_ticket)(user, vms[0], echo.port)
        comm = await communicator(vms[0].id, token, user)
        assert (await comm.connect())[0]
        assert await comm.receive_from() == b"HELLO"
        during = await database_sync_to_async(_scrape)(client)
        await comm.disconnect()
        assert await refused_with(await communicator(vms[0].id, "no-such-ticket", user)) == 4003
    after = await database_sync_to_async(_scrape)(client)

    def delta(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0) - before.get(key, 0)

    assert delta("console_sessions_started_total", protocol="vnc", host="fake", path="channels") == 1
    assert delta("console_sessions_ended_total", reason="client closed") == 1
    assert delta("console_bytes_total", direction="to_client") == 5
    assert delta("console_ticket_refusals_total", reason="unknown_ticket") == 1
    assert delta("console_first_byte_seconds_count", protocol="vnc") == 1
    assert (
        during[("console_sessions_open", (("host", "fake"), ("path", "channels"), ("protocol", "vnc")))] == 1
    )
    assert after[("libvirt_host_up", (("host", "fake"),))] == 1
    assert any(name == "libvirt_call_seconds_count" for name, _ in after)


def test_metrics_are_refused_to_anonymous_and_users_and_open_to_the_scrape_token(client, user, settings):
    assert client.get("/metrics").status_code == 401
    settings.METRICS_TOKEN = "scrape-secret-123"
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer scrape-secret-123"}).status_code == 200
    client.force_login(user)
    assert client.get("/metrics").status_code == 403


async def test_console_clipboard_off_drops_a_vnc_clients_clipboard_at_the_proxy(user, vms):
    """A hand-written client (not the page) sends its clipboard: the proxy keeps it from the VM
    and passes everything else; the echo server stands for the VM."""

    from tests.test_rfb import HANDSHAKE, KEY, POINTER, cut

    for policy, passes in (("off", False), ("from-vm", False), ("to-vm", True), ("both", True)):
        await database_sync_to_async(_set)("console.clipboard", policy)
        async with EchoServer() as echo:
            token = await database_sync_to_async(make_ticket)(user, vms[0], echo.port)
            comm = await communicator(vms[0].id, token, user)
            assert (await comm.connect())[0]
            assert await comm.receive_from() == b"HELLO"
            sent = HANDSHAKE + KEY + cut(b"the password") + POINTER
            await comm.send_to(bytes_data=sent)
            expected = sent if passes else HANDSHAKE + KEY + POINTER
            echoed = b""
            while len(echoed) < len(expected):
                echoed += await comm.receive_from()
            assert echoed == expected, policy
            await comm.disconnect()


# -- view-only consoles (shared to watch) -----------------------------------------------------------


def _share(vm, viewer):
    from console.sessions import console_share_create

    return console_share_create(vm=vm, username=viewer.username, by=vm.owner)


async def test_a_watchers_keys_mouse_and_clipboard_never_reach_the_vm(user, other_user, vms):
    from tests.test_rfb import ENCODINGS, HANDSHAKE, KEY, POINTER, QEMU_KEY, cut

    share = await database_sync_to_async(_share)(vms[0], other_user)
    async with EchoServer() as echo:
        token = await database_sync_to_async(make_ticket)(other_user, vms[0], echo.port)
        await database_sync_to_async(_age_ticket)(token, view_only=True)
        comm = await communicator(vms[0].id, token, other_user)
        assert (await comm.connect())[0]
        assert await comm.receive_from() == b"HELLO"
        # A modified page (or any client) sends input anyway: only what cannot touch the VM passes.
        await comm.send_to(bytes_data=HANDSHAKE + ENCODINGS + KEY + POINTER + QEMU_KEY + cut(b"rm -rf /"))
        echoed = b""
        while len(echoed) < len(HANDSHAKE + ENCODINGS):
            echoed += await comm.receive_from()
        assert echoed == HANDSHAKE + ENCODINGS
        assert await comm.receive_nothing(0.3)
        await comm.disconnect()
    assert share.pk


async def test_ending_a_share_ends_the_watchers_console(user, other_user, vms, settings):
    from console.sessions import console_share_end

    settings.CONSOLE_RECHECK_SECONDS = 0.2
    share = await database_sync_to_async(_share)(vms[0], other_user)
    async with EchoServer() as echo:
        token = await database_sync_to_async(make_ticket)(other_user, vms[0], echo.port)
        await database_sync_to_async(_age_ticket)(token, view_only=True)
        comm = await communicator(vms[0].id, token, other_user)
        assert (await comm.connect())[0]
        await comm.receive_from()
        await asyncio.sleep(0.4)  # watching, with the right to
        await database_sync_to_async(console_share_end)(vm=vms[0], share_id=share.pk)
        closed = await comm.receive_output(timeout=3)
        assert closed["code"] == Refusal.SHARE_ENDED.value
        await comm.disconnect()


async def test_a_watcher_gets_no_spice_inputs_channel(user, vms):
    async with EchoServer() as echo:
        token = await database_sync_to_async(make_ticket)(user, vms[0], echo.port, protocol="spice")
        await database_sync_to_async(_age_ticket)(token, view_only=True)
        comm = await communicator(vms[0].id, token, user)
        assert (await comm.connect())[0]
        await comm.receive_from()
        await comm.send_to(bytes_data=b"REDQ" + bytes(16) + bytes([3]) + bytes(20))
        closed = await comm.receive_output(timeout=3)
        assert closed["code"] == Refusal.VIEW_ONLY.value
        await comm.disconnect()


async def test_a_ticket_that_is_not_view_only_needs_the_vm_not_a_share(user, other_user, vms):
    await database_sync_to_async(_share)(vms[0], other_user)
    async with EchoServer() as echo:
        token = await database_sync_to_async(make_ticket)(other_user, vms[0], echo.port)  # full access
        assert await refused_with(await communicator(vms[0].id, token, other_user)) == Refusal.FORBIDDEN.value
