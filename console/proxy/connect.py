"""The HTTP CONNECT proxy for remote-viewer, in plain asyncio: transport only.

A .vv file with `proxy=http://HOST:PORT` and a ticket as its `host` makes remote-viewer send
`CONNECT <ticket>:<port> HTTP/1.1` here, once per SPICE channel. The ticket decides where the
connection goes (the VM's console, as recorded at issue); the client's words never do. The
gate terminates each channel's SPICE link: remote-viewer's password is the .vv file's
one-time secret, which the proxy checks, never the VM's.

Limits: a connection must send its request head within HEAD_TIMEOUT; one client address holds
at most PROXY_MAX_CONNECTIONS_PER_SOURCE connections (those still sending their head
included), and the process relays at most PROXY_MAX_CONNECTIONS. So idle connections from
one address cannot lock everyone else out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter

from django.conf import settings

from console.errors import End, Refused
from console.models import ConsoleSession, ConsoleTicket
from console.origins import client_ip
from console.proxy.gate import console_serve
from console.tickets import console_ticket_admit

logger = logging.getLogger(__name__)

MAX_HEAD = 8192
READ_SIZE = 64 * 1024
HEAD_TIMEOUT = 10.0
_STATUS = {End.HOST_DOWN: "503 Service Unavailable", End.UNREACHABLE: "502 Bad Gateway"}


async def _respond(writer: asyncio.StreamWriter, status: str, text: str = "", headers: str = "") -> None:
    body = (text + "\n").encode() if text else b""
    writer.write(
        f"HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
        f"Connection: close\r\n{headers}\r\n".encode()
        + body
    )
    with contextlib.suppress(ConnectionError):
        await writer.drain()


def _parse_connect(head: bytes) -> tuple[str, int] | str:
    """(token, port) from a CONNECT request head, or the HTTP status to refuse it with."""
    request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = request_line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return "400 Bad Request"
    method, target, _version = parts
    if method != "CONNECT":
        return "405 Method Not Allowed"
    token, _, port = target.rpartition(":")
    # isdigit() admits other scripts' digits and superscripts; a port is ASCII digits.
    if not token or not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
        return "400 Bad Request"
    return token, int(port)


class ConnectClient:
    """One CONNECT tunnel as the gate's client: refusals are HTTP statuses until the console is
    reached (200), raw bytes after."""

    via: str = ConsoleSession.Via.SPICE_PROXY

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, address: str | None
    ) -> None:
        self.reader, self.writer, self.address = reader, writer, address
        self.tunnel = False

    async def receive(self) -> bytes | None:
        try:
            return await self.reader.read(READ_SIZE) or None
        except (ConnectionError, OSError):
            return None

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def opened(self) -> None:
        self.writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        self.tunnel = True

    async def end(self, end: End, reason: str) -> None:
        if not self.tunnel:
            await _respond(self.writer, _STATUS.get(end, "403 Forbidden"), f"Refused: {reason}.")
        self.writer.close()

    def gone_reason(self) -> str:
        return "client closed"


def _admit(token: str, port: int) -> ConsoleTicket:
    ticket = console_ticket_admit(token=token, kind=ConsoleTicket.Kind.VV, port=port)
    if ticket.protocol != "spice":
        raise Refused(End.WRONG_PATH, "the SPICE proxy takes SPICE consoles only")
    return ticket


async def _read_head(reader: asyncio.StreamReader) -> bytes | None:
    try:
        return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError, ConnectionError):
        return None


async def handle_client(
    head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str | None
) -> None:
    if len(head) > MAX_HEAD:
        await _respond(writer, "431 Request Header Fields Too Large")
        return
    parsed = _parse_connect(head)
    if isinstance(parsed, str):
        extra = "Allow: CONNECT\r\n" if parsed.startswith("405") else ""
        await _respond(writer, parsed, "This proxy only takes CONNECT <ticket>:<port>.", extra)
        return
    token, port = parsed
    await console_serve(ConnectClient(reader, writer, peer), lambda: _admit(token, port))


async def serve(host: str, port: int, ready: asyncio.Event | None = None) -> None:
    """Run the proxy until cancelled (see the module's limits)."""
    relaying = asyncio.Semaphore(settings.PROXY_MAX_CONNECTIONS)
    per_source: Counter[str] = Counter()

    async def limited(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = client_ip((writer.get_extra_info("peername") or ("?",))[0])
        source = peer or "?"
        if per_source[source] >= settings.PROXY_MAX_CONNECTIONS_PER_SOURCE:
            await _respond(
                writer, "503 Service Unavailable", "Too many connections from your address; try later."
            )
            writer.close()
            return
        per_source[source] += 1
        try:
            head = await _read_head(reader)  # before taking one of the process's slots
            if head is None:
                return
            if relaying.locked():
                await _respond(
                    writer, "503 Service Unavailable", "The proxy is at its connection limit; try later."
                )
                return
            async with relaying:
                await handle_client(head, reader, writer, peer)
        finally:
            writer.close()
            per_source[source] -= 1
            if not per_source[source]:
                del per_source[source]

    server = await asyncio.start_server(limited, host, port)
    logger.info("SPICE proxy listening on %s", ", ".join(str(s.getsockname()) for s in server.sockets))
    if ready is not None:
        ready.set()
    async with server:
        await server.serve_forever()
