"""An HTTP CONNECT proxy for remote-viewer, in plain asyncio.

A .vv file with `proxy=http://HOST:PORT` and a ticket as its `host` makes remote-viewer send
`CONNECT <ticket>:<port> HTTP/1.1` here, once per SPICE channel. The ticket decides where the
connection goes (the VM's console, as recorded at issue); the client's words never do.
"""

from __future__ import annotations

import asyncio
import logging

from channels.db import database_sync_to_async
from django.conf import settings

from console.guard import session_guard
from console.metrics import REFUSALS
from console.models import ConsoleSession, ConsoleTicket
from console.relay import ConsoleLink
from console.sessions import console_session_end, console_session_start
from console.tickets import Refusal, TicketRefused, console_ticket_admit
from console.tunnels import console_connect

logger = logging.getLogger(__name__)

MAX_HEAD = 8192
READ_SIZE = 64 * 1024
HEAD_TIMEOUT = 10.0


async def _respond(writer: asyncio.StreamWriter, status: str, text: str = "", headers: str = "") -> None:
    body = (text + "\n").encode() if text else b""
    writer.write(
        f"HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
        f"Connection: close\r\n{headers}\r\n".encode()
        + body
    )
    try:
        await writer.drain()
    except ConnectionError:
        pass


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


async def handle_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    peer = (writer.get_extra_info("peername") or ("?",))[0]
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError, ConnectionError):
        writer.close()
        return
    try:
        await _serve(head, reader, writer, peer)
    finally:
        writer.close()


async def _serve(head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str) -> None:
    if len(head) > MAX_HEAD:
        await _respond(writer, "431 Request Header Fields Too Large")
        return
    parsed = _parse_connect(head)
    if isinstance(parsed, str):
        extra = "Allow: CONNECT\r\n" if parsed.startswith("405") else ""
        await _respond(writer, parsed, "This proxy only takes CONNECT <ticket>:<port>.", extra)
        return
    token, port = parsed
    try:
        ticket = await database_sync_to_async(console_ticket_admit)(
            token=token, kind=ConsoleTicket.Kind.VV, port=port
        )
    except TicketRefused as refused:
        REFUSALS.labels(refused.refusal.name.lower()).inc()
        logger.info("refused CONNECT from %s: %s", peer, refused.refusal.message)
        status = "503 Service Unavailable" if refused.refusal is Refusal.HOST_DOWN else "403 Forbidden"
        await _respond(writer, status, f"Refused: {refused.refusal.message}.")
        return
    try:
        link = await console_connect(ticket.ssh, ticket.address, port)
    except (OSError, asyncio.TimeoutError) as exc:
        logger.warning("console of %s at %s:%s unreachable: %s", ticket.vm, ticket.address, port, exc)
        await _respond(writer, "502 Bad Gateway", "The VM's console does not accept connections.")
        return
    session = await database_sync_to_async(console_session_start)(
        ticket=ticket, via=ConsoleSession.Via.SPICE_PROXY, client_address=peer
    )
    writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
    ended: list[Refusal] = []

    async def right_gone(refusal: Refusal) -> None:
        ended.append(refusal)
        await link.close()
        writer.close()

    session_guard().watch(
        session.pk, ticket.pk, right_gone, lambda: (link.bytes_to_client, link.bytes_from_client)
    )
    try:
        reason = await _relay(reader, writer, link)
    finally:
        session_guard().forget(session.pk)
    if ended:
        reason = ended[0].message
    await link.close()
    await database_sync_to_async(console_session_end)(
        session_id=session.pk,
        bytes_to_client=link.bytes_to_client,
        bytes_from_client=link.bytes_from_client,
        reason=reason,
    )


async def _relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: ConsoleLink) -> str:
    """Bytes both ways until one side closes; returns which did."""

    async def to_client(data: bytes) -> None:
        writer.write(data)
        await writer.drain()

    async def from_client() -> str:
        try:
            while data := await reader.read(READ_SIZE):
                link.write(data)
                await link.drain()
        except (ConnectionError, OSError):
            return "client connection lost"
        return "client closed"

    tasks = [asyncio.create_task(link.pump_to(to_client)), asyncio.create_task(from_client())]
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    return next(iter(done)).result()


async def serve(host: str, port: int, ready: asyncio.Event | None = None) -> None:
    """Run the proxy until cancelled, relaying at most PROXY_MAX_CONNECTIONS connections at once."""
    slots = asyncio.Semaphore(settings.PROXY_MAX_CONNECTIONS)

    async def limited(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if slots.locked():
            await _respond(
                writer, "503 Service Unavailable", "The proxy is at its connection limit; try later."
            )
            writer.close()
            return
        async with slots:
            await handle_client(reader, writer)

    server = await asyncio.start_server(limited, host, port)
    logger.info("SPICE proxy listening on %s", ", ".join(str(s.getsockname()) for s in server.sockets))
    if ready is not None:
        ready.set()
    async with server:
        await server.serve_forever()
