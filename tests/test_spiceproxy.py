"""The HTTP CONNECT proxy for remote-viewer, against a local TCP echo server."""

import asyncio

import pytest
from channels.db import database_sync_to_async

from console.models import ConsoleSession, Host, VirtualMachine
from console.spiceproxy import serve
from tests.helpers import TEST_NODE_URI, EchoServer, make_ticket

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def vm(user):
    host = Host.objects.create(name="fake", uri=TEST_NODE_URI)
    return VirtualMachine.objects.create(name="vm-a", owner=user, host=host)


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
    async with EchoServer() as echo:
        token = await database_sync_to_async(make_ticket)(user, vm, echo.port, protocol="spice", kind="vv")
        reader, writer, status = await connect(
            proxy, f"CONNECT {token}:{echo.port} HTTP/1.1\r\nHost: {token}\r\n\r\n".encode()
        )
        assert status == "HTTP/1.1 200 Connection established"
        assert await reader.readexactly(5) == b"HELLO"
        writer.write(b"spice link")
        assert await reader.readexactly(10) == b"spice link"
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
    async with EchoServer() as echo:
        token = await database_sync_to_async(make_ticket)(user, vm, echo.port, kind="vv")
        expired = await database_sync_to_async(make_ticket)(user, vm, echo.port, seconds=-1, kind="vv")
        line = request_line.format(port=echo.port, token=token, expired=expired)
        reader, writer, got = await connect(proxy, f"{line}\r\n\r\n".encode())
        assert got == f"HTTP/1.1 {status}"
        assert await reader.read() != b""  # a body saying why, then the proxy closes
        writer.close()
        assert echo.connections == 0
