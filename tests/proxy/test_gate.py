"""The console gate through the portal's WebSocket, with WebsocketCommunicator against console
stand-ins that authenticate the proxy as QEMU does (tests/helpers.py), then echo."""

import asyncio

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth.models import AnonymousUser
from django.test import Client

from console.errors import End
from console.models import ConsoleSession, ConsoleTicket, VirtualMachine
from tests.helpers import (
    HOST,
    EchoServer,
    SpiceServer,
    communicator,
    login_session,
    make_ticket,
    receive_exactly,
    rfb_handshake,
    spice_handshake,
    spice_link,
)
from tests.proxy.test_rfb import CLIP_PROVIDE, ENCODINGS, KEY, POINTER, QEMU_KEY, UPDATE_REQUEST, cut

pytestmark = pytest.mark.django_db(transaction=True)


async def test_relays_bytes_both_ways_and_records_the_session(user, vms):
    async with EchoServer() as echo:
        token = await database_sync_to_async(make_ticket)(user, vms[0], echo.port)
        comm = await communicator(vms[0].id, token, user)
        connected, subprotocol = await comm.connect()
        assert connected and subprotocol == "binary"
        await rfb_handshake(comm)
        payload = cut(bytes(range(256)) * 400)  # a clipboard, passed in pieces as it comes
        await comm.send_to(bytes_data=payload)
        assert await receive_exactly(comm, len(payload)) == payload
        await comm.disconnect()
        session = await database_sync_to_async(ConsoleSession.objects.get)()
        # What the client and the console exchanged (ClientInit on), not the proxy's own
        # handshake with QEMU.
        assert (session.bytes_to_client, session.bytes_from_client) == (5 + len(payload), 1 + len(payload))
        assert session.established_at is not None
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
        await rfb_handshake(comm)
        echo.writers[0].close()  # the VM shuts down
        closed = await comm.receive_output()
        assert closed == {"type": "websocket.close", "code": 4011, "reason": "console closed"}
        await comm.disconnect(code=4011)  # what Daphne does once the close handshake is done
        session = await database_sync_to_async(ConsoleSession.objects.get)()
        assert session.end_reason == "console closed"
    assert {t for t in asyncio.all_tasks() if not t.done()} == {asyncio.current_task()}


async def test_a_console_whose_vm_moves_ends_moved_and_the_page_reconnects(user, vms):
    """Live migration: the source's QEMU closes the console as the VM leaves it; the page is told
    the VM moved (a code it reconnects after, with a fresh ticket, to the new host)."""
    from console.errors import End
    from console.models import Host, LiveMigration

    async with EchoServer() as echo:
        token = await database_sync_to_async(make_ticket)(user, vms[0], echo.port)
        comm = await communicator(vms[0].id, token, user)
        await comm.connect()
        await rfb_handshake(comm)
        target = await database_sync_to_async(Host.objects.create)(name="hv9", uri="test:///default")
        await database_sync_to_async(LiveMigration.objects.create)(
            vm=vms[0], source_id=vms[0].host_id, target=target
        )
        echo.writers[0].close()  # the VM left this host
        closed = await comm.receive_output()
        assert closed["code"] == End.VM_MOVED == 4029 and End.VM_MOVED.reconnects
        assert closed["reason"] == "the VM moved to hv9"
        await comm.disconnect(code=4029)
        session = await database_sync_to_async(ConsoleSession.objects.get)()
        assert session.end_reason == "the VM moved to hv9"  # one session moving, not an error


async def guard_round() -> None:
    """One round of the guard's checks, now (the periodic one is set far off in these tests)."""
    from console.proxy.guard import session_guard

    await session_guard().check_now()


async def admitted(comm) -> None:
    """Connect, and complete the console's handshake: the WebSocket is accepted before the
    checks, so only the console's handshake says they passed (and the session is recorded)."""
    assert (await comm.connect())[0]
    await rfb_handshake(comm)


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
                End.NOT_LOGGED_IN,
                await communicator(vm_a.id, await new(user, vm_a, echo.port), AnonymousUser()),
            ),
            (End.OTHER_USER, await communicator(vm_a.id, await new(user, vm_a, echo.port), other_user)),
            (
                End.EXPIRED,
                await communicator(vm_a.id, await new(user, vm_a, echo.port, seconds=-1), user),
            ),
            (End.OTHER_VM, await communicator(vm_b.id, await new(user, vm_a, echo.port), user)),
            (
                End.FOREIGN_ORIGIN,
                await communicator(
                    vm_a.id,
                    await new(user, vm_a, echo.port),
                    user,
                    headers=[(b"origin", b"https://evil.example"), HOST],
                ),
            ),
            (
                End.FOREIGN_ORIGIN,
                await communicator(vm_a.id, await new(user, vm_a, echo.port), user, headers=[HOST]),
            ),
            (End.UNKNOWN_TICKET, await communicator(vm_a.id, "made-up-token", user)),
            (End.UNKNOWN_TICKET, await communicator(vm_a.id, "", user)),
        ]
        for refusal, comm in cases:
            assert await refused_with(comm) == refusal, refusal
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
            await admitted(comm)
        assert await refused_with(await communicator(vms[0].id, token, user)) == End.EXHAUSTED
        for comm in (first, second):
            await comm.disconnect()
        assert echo.connections == 2


async def test_revoked_access_refuses_an_issued_ticket(user, other_user, vms):
    async with EchoServer() as echo:
        token = await database_sync_to_async(make_ticket)(user, vms[0], echo.port)
        comm = await communicator(vms[0].id, token, user)
        await database_sync_to_async(VirtualMachine.objects.filter(pk=vms[0].pk).update)(owner=other_user)
        assert await refused_with(comm) == End.FORBIDDEN
        deactivated = await database_sync_to_async(make_ticket)(other_user, vms[0], echo.port)
        comm = await communicator(vms[0].id, deactivated, other_user)
        await database_sync_to_async(type(user).objects.filter(pk=other_user.pk).update)(is_active=False)
        assert await refused_with(comm) == End.NOT_LOGGED_IN  # Django's login ends first
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


def _operator_made_viewer(user, vm, session_key):
    """The VM given away, the user left a viewer by grant: they may watch, not operate."""
    from console.models import VmGrant

    _give_vm_away(user, vm, session_key)
    VmGrant.objects.create(vm=vm, user=user, role="viewer")


def _operator_share_expired(user, vm, session_key):
    """The VM given away, the user left an operator share whose time box is over."""
    from datetime import timedelta

    from django.utils import timezone

    from console.models import ConsoleShare

    _give_vm_away(user, vm, session_key)
    ConsoleShare.objects.create(
        vm=vm, viewer=user, role="operator", expires_at=timezone.now() - timedelta(seconds=1)
    )


def _admin_ends_it(user, vm, session_key):
    from console.sessions import console_session_end_request

    admin = type(user).objects.create_user("ops", password="ops-pw-123", is_staff=True)
    assert console_session_end_request(session_id=ConsoleSession.objects.get().pk, by=admin)


@pytest.mark.parametrize(
    "change, refusal",
    [
        (_admin_ends_it, End.ENDED_BY_ADMIN),
        (_logout, End.LOGGED_OUT),
        (_new_password, End.PASSWORD_CHANGED),
        (_deactivate, End.DEACTIVATED),
        (_give_vm_away, End.FORBIDDEN),
        (_operator_made_viewer, End.FORBIDDEN),
        (_operator_share_expired, End.FORBIDDEN),
    ],
)
async def test_an_open_console_ends_when_the_right_to_it_ends(user, vms, settings, change, refusal):
    settings.CONSOLE_RECHECK_SECONDS = 600  # the test drives the rounds
    async with EchoServer() as echo:
        key = await database_sync_to_async(login_session)(user)
        token = await database_sync_to_async(make_ticket)(user, vms[0], echo.port, session_key=key)
        comm = await communicator(vms[0].id, token, user, session_key=key)
        await admitted(comm)
        for _ in range(3):  # rounds pass while the right holds
            await guard_round()
        await comm.send_to(bytes_data=KEY)
        assert await receive_exactly(comm, len(KEY)) == KEY

        await database_sync_to_async(change)(user, vms[0], key)
        await guard_round()
        closed = await comm.receive_output(timeout=3)
        assert closed == {"type": "websocket.close", "code": refusal, "reason": refusal.reason}
        await comm.disconnect(code=refusal)
        session = await database_sync_to_async(ConsoleSession.objects.get)()
        assert session.ended_at is not None and session.end_reason == refusal.reason
        await asyncio.sleep(0.05)
        assert echo.open == 0
    assert {t for t in asyncio.all_tasks() if not t.done()} == {asyncio.current_task()}


async def test_open_consoles_send_heartbeats(user, vms, settings):
    settings.CONSOLE_RECHECK_SECONDS = 600
    async with EchoServer() as echo:
        token = await database_sync_to_async(make_ticket)(user, vms[0], echo.port)
        comm = await communicator(vms[0].id, token, user)
        await admitted(comm)
        first = (await database_sync_to_async(ConsoleSession.objects.get)()).seen_at
        await comm.send_to(bytes_data=KEY)
        await receive_exactly(comm, len(KEY))
        await guard_round()
        later = await database_sync_to_async(ConsoleSession.objects.get)()
        assert later.seen_at > first
        # the live consoles page sees the bytes so far, before the session ends
        assert (later.bytes_to_client, later.bytes_from_client) == (13, 9) and later.ended_at is None
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
        assert await refused_with(comm) == End.FOREIGN_ORIGIN
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
        assert await refused_with(await communicator(vms[0].id, token, user)) == End.WRONG_PATH
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
        assert await refused_with(comm) == End.VM_RESTARTED
        assert echo.connections == 0


async def test_consoles_per_user_are_capped(user, vms):
    from console.globalconfig import MAX_SESSIONS_PER_USER, config_set

    await database_sync_to_async(config_set)(key=MAX_SESSIONS_PER_USER, value="1", actor="test")
    async with EchoServer() as echo:
        first = await database_sync_to_async(make_ticket)(user, vms[0], echo.port)
        second = await database_sync_to_async(make_ticket)(user, vms[0], echo.port)
        channel = await communicator(vms[0].id, first, user)
        await admitted(channel)
        # More channels of the same console are fine (spice-html5 opens several)...
        another_channel = await communicator(vms[0].id, first, user)
        await admitted(another_channel)
        # ...another console is not, until one closes.
        refused = await refused_with(await communicator(vms[0].id, second, user))
        assert refused == End.TOO_MANY_CONSOLES
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

    settings.CONSOLE_RECHECK_SECONDS = 600
    await database_sync_to_async(_set)("console.idleTimeoutMinutes", "1")
    long_ago = timezone.now() - timedelta(minutes=5)
    async with EchoServer() as echo:
        idle_token = await database_sync_to_async(make_ticket)(user, vms[0], echo.port)
        busy_token = await database_sync_to_async(make_ticket)(user, vms[0], echo.port)
        idle = await communicator(vms[0].id, idle_token, user)
        busy = await communicator(vms[0].id, busy_token, user)
        for comm in (idle, busy):
            await admitted(comm)
        # The proxy follows the client's messages: a key press is the user's input; screen
        # update requests (which a page sends all the time) are not.
        await idle.send_to(bytes_data=UPDATE_REQUEST)
        await busy.send_to(bytes_data=KEY)
        await receive_exactly(idle, len(UPDATE_REQUEST))
        await receive_exactly(busy, len(KEY))
        await database_sync_to_async(_age_ticket)(idle_token, created_at=long_ago)
        await database_sync_to_async(_age_ticket)(busy_token, created_at=long_ago)
        await guard_round()  # records the busy one's input, ends the idle one
        closed = await idle.receive_output(timeout=3)
        assert closed["code"] == End.IDLE
        await busy.send_to(bytes_data=POINTER)
        assert await receive_exactly(busy, len(POINTER)) == POINTER  # the active one stays
        await idle.disconnect()
        await busy.disconnect()


async def test_input_on_a_spice_inputs_channel_counts_as_activity(user, vms, settings):
    settings.CONSOLE_RECHECK_SECONDS = 600
    async with SpiceServer() as spice:
        token = await database_sync_to_async(make_ticket)(user, vms[0], spice.port, protocol="spice")
        comm = await communicator(vms[0].id, token, user)
        assert (await comm.connect())[0]
        await spice_handshake(comm, channel=3)
        assert spice.links == [3]
        assert (await database_sync_to_async(ConsoleTicket.objects.get)()).last_input_at is None
        await guard_round()
        assert (await database_sync_to_async(ConsoleTicket.objects.get)()).last_input_at is None
        await comm.send_to(bytes_data=b"a key")
        await receive_exactly(comm, 5)
        await guard_round()
        assert (await database_sync_to_async(ConsoleTicket.objects.get)()).last_input_at is not None
        await comm.disconnect()


async def test_a_console_is_ended_at_its_maximum_length(user, vms, settings):
    from datetime import timedelta

    from django.utils import timezone

    settings.CONSOLE_RECHECK_SECONDS = 600
    await database_sync_to_async(_set)("console.maxSessionMinutes", "10")
    async with EchoServer() as echo:
        token = await database_sync_to_async(make_ticket)(user, vms[0], echo.port)
        comm = await communicator(vms[0].id, token, user)
        await admitted(comm)
        await comm.send_to(bytes_data=KEY)
        await receive_exactly(comm, len(KEY))
        await guard_round()  # active, and young: it stays
        assert await comm.receive_nothing(0.1)
        await database_sync_to_async(_age_ticket)(token, created_at=timezone.now() - timedelta(minutes=11))
        await guard_round()
        closed = await comm.receive_output(timeout=3)
        assert closed["code"] == End.TOO_LONG
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

    staff = await database_sync_to_async(django_user_model.objects.create_user)(
        "ops", password="ops-pw-123", is_staff=True
    )
    client = Client()
    await database_sync_to_async(client.force_login)(staff)
    before = await database_sync_to_async(_scrape)(client)
    async with EchoServer() as echo:
        token = await database_sync_to_async(make_ticket)(user, vms[0], echo.port)
        comm = await communicator(vms[0].id, token, user)
        await admitted(comm)
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
    for policy, passes in (("off", False), ("from-vm", False), ("to-vm", True), ("both", True)):
        await database_sync_to_async(_set)("console.clipboard", policy)
        async with EchoServer() as echo:
            token = await database_sync_to_async(make_ticket)(user, vms[0], echo.port)
            comm = await communicator(vms[0].id, token, user)
            await admitted(comm)
            sent = KEY + cut(b"the password") + POINTER
            await comm.send_to(bytes_data=sent)
            expected = sent if passes else KEY + POINTER
            assert await receive_exactly(comm, len(expected)) == expected, policy
            assert await comm.receive_nothing(0.1)
            await comm.disconnect()


# -- view-only consoles (shared to watch) -----------------------------------------------------------


def _share(vm, viewer):
    from console.shares import console_share_create

    return console_share_create(vm=vm, username=viewer.username, by=vm.owner)


async def test_a_watchers_keys_mouse_and_clipboard_never_reach_the_vm(user, other_user, vms):
    await database_sync_to_async(_share)(vms[0], other_user)
    async with EchoServer() as echo:
        token = await database_sync_to_async(make_ticket)(other_user, vms[0], echo.port, view_only=True)
        comm = await communicator(vms[0].id, token, other_user)
        assert (await comm.connect())[0]
        await rfb_handshake(comm, shared=0)  # asks for exclusive: QEMU gets shared
        assert echo.shared_flags == [1]
        # A modified page (or any client) sends input anyway: only what cannot touch the VM passes.
        await comm.send_to(bytes_data=ENCODINGS + KEY + POINTER + QEMU_KEY + cut(b"rm -rf /") + CLIP_PROVIDE)
        without_clipboard = ENCODINGS[:2] + b"\x00\x02" + ENCODINGS[4:12]
        assert await receive_exactly(comm, len(without_clipboard)) == without_clipboard
        assert await comm.receive_nothing(0.3)
        await comm.disconnect()


async def test_an_unknown_message_ends_the_console_and_nothing_after_it_reaches_the_vm(user, vms):
    async with EchoServer() as echo:
        token = await database_sync_to_async(make_ticket)(user, vms[0], echo.port)
        comm = await communicator(vms[0].id, token, user)
        await admitted(comm)
        await comm.send_to(bytes_data=bytes([7]) + KEY * 10)  # one write: unknown, then keys
        closed = await comm.receive_output(timeout=3)
        assert closed["type"] == "websocket.close" and closed["code"] == End.PROTOCOL_VIOLATION
        await comm.disconnect(code=closed["code"])
        session = await database_sync_to_async(ConsoleSession.objects.get)()
        assert session.end_reason == End.PROTOCOL_VIOLATION.reason and session.bytes_from_client == 1


async def test_ending_a_share_ends_the_watchers_console_at_once(user, other_user, vms, settings):
    """The notice reaches the relaying process at once: no waiting for the periodic check."""
    from console.shares import console_share_end

    settings.CONSOLE_RECHECK_SECONDS = 30
    share = await database_sync_to_async(_share)(vms[0], other_user)
    async with EchoServer() as echo:
        token = await database_sync_to_async(make_ticket)(other_user, vms[0], echo.port, view_only=True)
        comm = await communicator(vms[0].id, token, other_user)
        await admitted(comm)
        await database_sync_to_async(console_share_end)(vm=vms[0], share_id=share.pk)
        closed = await comm.receive_output(timeout=3)
        assert closed["code"] == End.SHARE_ENDED
        await comm.disconnect()


async def test_a_watcher_gets_no_spice_inputs_channel_even_with_its_link_split(user, vms):
    link = spice_link(3)
    async with SpiceServer() as spice:
        token = await database_sync_to_async(make_ticket)(
            user, vms[0], spice.port, protocol="spice", view_only=True
        )
        comm = await communicator(vms[0].id, token, user)
        assert (await comm.connect())[0]
        await comm.send_to(bytes_data=link[:21])
        await comm.send_to(bytes_data=link[21:])
        closed = await comm.receive_output(timeout=3)
        assert closed["code"] == End.VIEW_ONLY
        await comm.disconnect()
        assert spice.links == []  # QEMU never saw the link


async def test_a_ticket_that_is_not_view_only_needs_the_vm_not_a_share(user, other_user, vms):
    await database_sync_to_async(_share)(vms[0], other_user)
    async with EchoServer() as echo:
        token = await database_sync_to_async(make_ticket)(other_user, vms[0], echo.port)  # full access
        assert await refused_with(await communicator(vms[0].id, token, other_user)) == End.FORBIDDEN


async def test_a_password_rotated_under_a_connection_costs_it_one_more_try(user, vms):
    """QEMU refuses the password the proxy read, because a rotation changed it meanwhile: the
    proxy reads the new one and tries again; the client sees none of it."""
    from datetime import timedelta

    from django.utils import timezone

    from console.graphics import graphics_password_record

    def rotated() -> None:
        ticket = ConsoleTicket.objects.get()
        graphics_password_record(
            vm=vms[0],
            domain_id=ticket.domain_id,
            password="the-new-one",
            valid_until=timezone.now() + timedelta(minutes=5),
        )

    async with EchoServer(password="the-new-one", on_auth_failure=database_sync_to_async(rotated)) as echo:
        token = await database_sync_to_async(make_ticket)(user, vms[0], echo.port, password="the-old-one")
        comm = await communicator(vms[0].id, token, user)
        await admitted(comm)
        assert (echo.auth_failures, echo.connections) == (1, 2)
        await comm.disconnect()


async def test_a_vv_files_one_time_password_is_checked_by_the_proxy(user, vms):
    from console.proxy.connect import serve

    ready = asyncio.Event()
    from bench.setup import free_port

    port = free_port()
    server = asyncio.create_task(serve("127.0.0.1", port, ready))
    await ready.wait()
    try:
        async with SpiceServer() as spice:
            token = await database_sync_to_async(make_ticket)(
                user, vms[0], spice.port, protocol="spice", kind="vv", client_secret="one-time-secret"
            )
            for secret, linked in (("guessed", False), ("one-time-secret", True)):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(f"CONNECT {token}:{spice.port} HTTP/1.1\r\n\r\n".encode())
                assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
                writer.write(spice_link(1))
                header = await reader.readexactly(16)
                reply = await reader.readexactly(int.from_bytes(header[12:16], "little"))
                from cryptography.hazmat.primitives import serialization

                from tests.helpers import OAEP

                key = serialization.load_der_public_key(reply[4 : 4 + 162])
                writer.write((1).to_bytes(4, "little") + key.encrypt(secret.encode() + b"\0", OAEP))
                result = await reader.readexactly(4)
                assert (result == bytes(4)) is linked, secret
                if linked:
                    assert await reader.readexactly(5) == b"HELLO"
                writer.close()
            assert spice.auth_failures == 0  # QEMU's password is the proxy's business only
    finally:
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)


async def test_revoking_an_api_token_ends_the_consoles_opened_with_it_at_once(user, vms, settings):
    from console.apitokens import api_token_create, api_token_revoke

    settings.CONSOLE_RECHECK_SECONDS = 600  # no periodic round: the notice ends it
    token_row, _ = await database_sync_to_async(api_token_create)(user=user, name="script")
    async with EchoServer() as echo:
        ticket = await database_sync_to_async(make_ticket)(user, vms[0], echo.port, kind="api", origin="")
        await database_sync_to_async(_age_ticket)(ticket, api_token=token_row)
        comm = await communicator(vms[0].id, ticket, user)
        await admitted(comm)
        await database_sync_to_async(api_token_revoke)(user=user, token_id=token_row.pk)
        closed = await comm.receive_output(timeout=3)
        assert closed["code"] == End.TOKEN_REVOKED
        await comm.disconnect()


# -- control handed between two people on one VNC console (console.control) ------------------------


async def test_control_moves_between_two_people_on_one_console_and_back(user, other_user, vms, settings):
    """A watcher with an operator share asks; the owner gives control: the proxy passes the
    watcher's keys and drops the owner's at once (the notice), and the other way round when the
    owner takes it back. A viewer may not ask at all."""
    from console.control import ControlRefused, control_answer, control_end, control_request, control_state
    from console.shares import console_share_create

    settings.CONSOLE_RECHECK_SECONDS = 30  # only the notices can do it in time
    vm = vms[0]
    await database_sync_to_async(console_share_create)(
        vm=vm, username=other_user.username, by=user, role="operator"
    )
    owner_key = await database_sync_to_async(login_session)(user)
    guest_key = await database_sync_to_async(login_session)(other_user)
    async with EchoServer() as echo:
        owner_token = await database_sync_to_async(make_ticket)(user, vm, echo.port, session_key=owner_key)
        guest_token = await database_sync_to_async(make_ticket)(
            other_user, vm, echo.port, session_key=guest_key, view_only=True
        )
        owner = await communicator(vm.id, owner_token, user, session_key=owner_key)
        guest = await communicator(vm.id, guest_token, other_user, session_key=guest_key)
        await admitted(owner)
        await admitted(guest)

        async def passes(comm) -> bool:
            await comm.send_to(bytes_data=KEY)
            return not await comm.receive_nothing(0.3) and await receive_exactly(comm, len(KEY)) == KEY

        assert await passes(owner) and not await passes(guest)
        asked = await database_sync_to_async(control_request)(user=other_user, vm=vm, session_key=guest_key)
        assert asked.state == "asked"
        state = await database_sync_to_async(control_state)(
            user=user, vm=vm, session_key=owner_key, watching=False
        )
        assert state["requests"] == [{"id": asked.pk, "user": other_user.username}] and state["input"]
        await database_sync_to_async(control_answer)(
            user=user, vm=vm, session_key=owner_key, handover_id=asked.pk, accept=True
        )
        await asyncio.sleep(0.3)  # the notice's round
        assert await passes(guest) and not await passes(owner)
        state = await database_sync_to_async(control_state)(
            user=user, vm=vm, session_key=owner_key, watching=False
        )
        assert state["handedTo"] == other_user.username and not state["input"]
        with pytest.raises(ControlRefused, match="handed control over"):
            await database_sync_to_async(control_request)(user=user, vm=vm, session_key=owner_key)

        assert await database_sync_to_async(control_end)(user=user, vm=vm, session_key=owner_key) == 1
        await asyncio.sleep(0.3)
        assert await passes(owner) and not await passes(guest)
        await owner.disconnect()
        await guest.disconnect()


def test_a_viewer_may_not_ask_for_control_and_a_lone_operator_gets_it_at_once(user, other_user, vms):
    from console.control import ControlRefused, control_request
    from console.shares import console_share_create

    share = console_share_create(vm=vms[0], username=other_user.username, by=user)
    with pytest.raises(ControlRefused, match="A viewer may only watch"):
        control_request(user=other_user, vm=vms[0], session_key="k" * 32)
    share.role = "operator"
    share.save()
    # Nobody else has input on the console: it is theirs without asking.
    assert control_request(user=other_user, vm=vms[0], session_key="k" * 32).state == "accepted"
