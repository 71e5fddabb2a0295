"""The HTTP CONNECT proxy for remote-viewer, against a SPICE console stand-in: the proxy
terminates each channel's link and checks the .vv file's one-time password."""

import asyncio
import socket
import struct

import pytest
from channels.db import database_sync_to_async
from cryptography.hazmat.primitives import serialization

from console.models import ConsoleSession
from console.proxy.connect import serve
from tests.helpers import OAEP, SpiceServer, make_ticket, spice_link

pytestmark = pytest.mark.django_db(transaction=True)
SECRET = "the-vv-files-password"


def vv_ticket(user, vm, port, **fields):
    fields.setdefault("kind", "vv")
    fields.setdefault("protocol", "spice")
    return make_ticket(user, vm, port, client_secret=SECRET, **fields)


async def linked(reader, writer, secret: str = SECRET) -> None:
    """remote-viewer's side of a channel's link, through the tunnel, until the console greets."""
    writer.write(spice_link(1))
    header = await reader.readexactly(16)
    reply = await reader.readexactly(struct.unpack_from("<I", header, 12)[0])
    key = serialization.load_der_public_key(reply[4 : 4 + 162])
    writer.write(struct.pack("<I", 1) + key.encrypt(secret.encode() + b"\0", OAEP))
    assert await reader.readexactly(4) == bytes(4)
    assert await reader.readexactly(5) == b"HELLO"


@pytest.fixture
async def proxy():
    ready = asyncio.Event()
    with_port = {}

    async def run():
        import socket

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        with_port["port"] = sock.getsockname()[1]
        sock.close()
        await serve("127.0.0.1", with_port["port"], ready)

    task = asyncio.create_task(run())
    await asyncio.wait_for(ready.wait(), 5)
    yield with_port["port"]
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def connect(port, request: bytes):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    return reader, writer, head.split(b"\r\n", 1)[0].decode()


async def test_connect_with_a_ticket_relays_to_the_console(proxy, user, vm):
    async with SpiceServer() as echo:
        token = await database_sync_to_async(vv_ticket)(user, vm, echo.port)
        reader, writer, status = await connect(
            proxy, f"CONNECT {token}:{echo.port} HTTP/1.1\r\nHost: {token}\r\n\r\n".encode()
        )
        assert status == "HTTP/1.1 200 Connection established"
        await linked(reader, writer)
        writer.write(b"spice data")
        assert await reader.readexactly(10) == b"spice data"
        writer.close()
        await asyncio.sleep(0.1)
        session = await database_sync_to_async(ConsoleSession.objects.get)()
        assert (session.via, session.bytes_to_client, session.bytes_from_client) == ("spiceproxy", 15, 10)
        assert session.ended_at is not None and echo.open == 0


@pytest.mark.parametrize(
    "request_line, status",
    [
        ("GET http://127.0.0.1:22/ HTTP/1.1", "405 Method Not Allowed"),
        ("CONNECT 127.0.0.1:{port} HTTP/1.1", "403 Forbidden"),  # an address is no ticket
        ("CONNECT unknown-ticket:{port} HTTP/1.1", "403 Forbidden"),
        ("CONNECT {token}:22 HTTP/1.1", "403 Forbidden"),  # not the ticket's console port
        ("CONNECT {expired}:{port} HTTP/1.1", "403 Forbidden"),
        ("CONNECT nonsense", "400 Bad Request"),
    ],
)
async def test_everything_else_is_refused(proxy, user, vm, request_line, status):
    async with SpiceServer() as echo:
        token = await database_sync_to_async(vv_ticket)(user, vm, echo.port)
        expired = await database_sync_to_async(vv_ticket)(user, vm, echo.port, seconds=-1)
        line = request_line.format(port=echo.port, token=token, expired=expired)
        reader, writer, got = await connect(proxy, f"{line}\r\n\r\n".encode())
        assert got == f"HTTP/1.1 {status}"
        assert await reader.read() != b""  # a body saying why, then the proxy closes
        writer.close()
        assert echo.connections == 0


@pytest.mark.parametrize("port", ["\u0663\u0663", "\u00b2", "-1", "65536", "0x16", ""])
async def test_a_port_that_is_not_ascii_digits_is_a_bad_request(proxy, user, vm, port):
    async with SpiceServer() as echo:
        token = await database_sync_to_async(vv_ticket)(user, vm, echo.port)
        request = f"CONNECT {token}:{port} HTTP/1.1\r\n\r\n".encode()
        _, writer, status = await connect(proxy, request)
        assert status == "HTTP/1.1 400 Bad Request"
        writer.close()


async def test_refused_connects_use_up_nothing(proxy, user, vm):
    async with SpiceServer() as echo:
        token = await database_sync_to_async(vv_ticket)(user, vm, echo.port, max_connections=1)
        for _ in range(3):  # another port than the console's: refused, and nothing counted
            _, writer, status = await connect(proxy, f"CONNECT {token}:22 HTTP/1.1\r\n\r\n".encode())
            assert status == "HTTP/1.1 403 Forbidden"
            writer.close()
        reader, writer, status = await connect(
            proxy, f"CONNECT {token}:{echo.port} HTTP/1.1\r\n\r\n".encode()
        )
        assert status == "HTTP/1.1 200 Connection established"
        writer.close()


@pytest.mark.parametrize("kind", ["browser", "websockify"])
async def test_a_ticket_handed_to_a_page_is_no_bearer_token_here(proxy, user, vm, kind):
    async with SpiceServer() as echo:
        token = await database_sync_to_async(make_ticket)(user, vm, echo.port, kind=kind)
        reader, writer, status = await connect(
            proxy, f"CONNECT {token}:{echo.port} HTTP/1.1\r\n\r\n".encode()
        )
        assert status == "HTTP/1.1 403 Forbidden"
        assert b"another console proxy" in await reader.read()
        writer.close()
        assert echo.connections == 0


async def test_connections_are_capped(user, vm, settings):
    settings.PROXY_MAX_CONNECTIONS = 1
    ready = asyncio.Event()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    task = asyncio.create_task(serve("127.0.0.1", port, ready))
    await asyncio.wait_for(ready.wait(), 5)
    try:
        async with SpiceServer() as echo:
            token = await database_sync_to_async(vv_ticket)(user, vm, echo.port)
            request = f"CONNECT {token}:{echo.port} HTTP/1.1\r\n\r\n".encode()
            _, first, status = await connect(port, request)
            assert status == "HTTP/1.1 200 Connection established"
            _, second, status = await connect(port, request)
            assert status == "HTTP/1.1 503 Service Unavailable"
            second.close()
            first.close()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_logging_out_ends_a_virt_viewer_session(proxy, user, vm, settings):
    from django.contrib.sessions.models import Session
    from django.test import Client

    settings.CONSOLE_RECHECK_SECONDS = 0.2

    def login():
        client = Client()
        client.force_login(user)
        return client.cookies["sessionid"].value

    async with SpiceServer() as echo:
        key = await database_sync_to_async(login)()
        token = await database_sync_to_async(vv_ticket)(user, vm, echo.port, session_key=key)
        reader, writer, status = await connect(
            proxy, f"CONNECT {token}:{echo.port} HTTP/1.1\r\n\r\n".encode()
        )
        assert status == "HTTP/1.1 200 Connection established"
        await linked(reader, writer)
        await database_sync_to_async(Session.objects.filter(session_key=key).delete)()
        assert await asyncio.wait_for(reader.read(), 3) == b""  # the proxy hung up
        writer.close()
        await asyncio.sleep(0.1)
        session = await database_sync_to_async(ConsoleSession.objects.get)()
        assert session.end_reason == "you logged out (or your login expired)"


async def test_an_administrator_ends_a_virt_viewer_session(proxy, user, vm, settings, django_user_model):
    from console.sessions import console_session_end_request

    settings.CONSOLE_RECHECK_SECONDS = 0.2
    admin = await database_sync_to_async(django_user_model.objects.create_user)(
        "ops", password="ops-pw-123", is_staff=True
    )
    async with SpiceServer() as echo:
        token = await database_sync_to_async(vv_ticket)(user, vm, echo.port)
        reader, writer, status = await connect(
            proxy, f"CONNECT {token}:{echo.port} HTTP/1.1\r\n\r\n".encode()
        )
        assert status == "HTTP/1.1 200 Connection established"
        await linked(reader, writer)
        session = await database_sync_to_async(ConsoleSession.objects.get)()
        assert await database_sync_to_async(console_session_end_request)(session_id=session.pk, by=admin)
        assert await asyncio.wait_for(reader.read(), 3) == b""  # the proxy hung up
        writer.close()
        await asyncio.sleep(0.1)
        session = await database_sync_to_async(ConsoleSession.objects.select_related("ended_by").get)()
        assert session.end_reason == "an administrator ended this console session"
        assert session.ended_by == admin


async def test_a_wrong_one_time_password_is_refused_and_qemu_never_asked(proxy, user, vm):
    async with SpiceServer() as echo:
        token = await database_sync_to_async(vv_ticket)(user, vm, echo.port)
        reader, writer, status = await connect(
            proxy, f"CONNECT {token}:{echo.port} HTTP/1.1\r\n\r\n".encode()
        )
        assert status == "HTTP/1.1 200 Connection established"
        writer.write(spice_link(1))
        header = await reader.readexactly(16)
        reply = await reader.readexactly(struct.unpack_from("<I", header, 12)[0])
        key = serialization.load_der_public_key(reply[4 : 4 + 162])
        writer.write(struct.pack("<I", 1) + key.encrypt(b"guessed\0", OAEP))
        assert await reader.readexactly(4) == struct.pack("<I", 7)  # permission denied
        assert await asyncio.wait_for(reader.read(), 3) == b""
        writer.close()
        assert echo.auth_failures == 0  # the VM's password was never the client's to guess


async def test_idle_connections_from_one_address_cannot_lock_out_another(user, vm, settings):
    """Connections that never send their request head count against their own address only,
    and take none of the process's relaying slots."""
    settings.PROXY_MAX_CONNECTIONS = 4
    settings.PROXY_MAX_CONNECTIONS_PER_SOURCE = 3
    ready = asyncio.Event()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    task = asyncio.create_task(serve("127.0.0.1", port, ready))
    await asyncio.wait_for(ready.wait(), 5)
    idle = []
    try:
        for _ in range(3):
            idle.append(await asyncio.open_connection("127.0.0.1", port))
        await asyncio.sleep(0.1)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"CONNECT x:1 HTTP/1.1\r\n\r\n")
        assert (await asyncio.wait_for(reader.readline(), 5)).startswith(
            b"HTTP/1.1 503"
        )  # this address's fourth
        writer.close()
        async with SpiceServer() as echo:
            token = await database_sync_to_async(vv_ticket)(user, vm, echo.port)
            reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.2", 0))
            writer.write(f"CONNECT {token}:{echo.port} HTTP/1.1\r\n\r\n".encode())
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
            await linked(reader, writer)
            writer.close()
    finally:
        for _, writer in idle:
            writer.close()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
