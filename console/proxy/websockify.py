"""websockify as a standalone console proxy: websockify's HTTP server, WebSocket handshake and
process per connection; the connection itself runs through the gate like every other path.

Connections come to ws://HOST:PORT/?token=<ticket>; only tickets issued for this proxy, to the
page origin now connecting, are admitted, and the ticket, never the client, names the
target. There is no file serving (websockify's --web is never set) and tokens are kept out of
its logs. Each connection is a process of its own (websockify forks), which runs the gate on
an event loop of its own over websockify's non-blocking WebSocket object.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import socket
from urllib.parse import parse_qs, urlsplit

from django.conf import settings
from django.db import connections
from websockify.websocket import WebSocketWantReadError, WebSocketWantWriteError
from websockify.websocketproxy import ProxyRequestHandler, WebSocketProxy

from console.errors import End
from console.models import ConsoleSession, ConsoleTicket
from console.origins import client_ip, origin_normalize
from console.proxy.gate import console_serve
from console.tickets import console_ticket_admit
from portal.logsafety import redact_tokens


class TicketTokens:
    """websockify's token-plugin contract: token -> (host, port), or None."""

    def lookup(self, token: str) -> tuple[str, int] | None:
        # Never asked: the gate admits the ticket after the handshake (so a refusal can say
        # why with its close code) and connects to the ticket's console itself.
        return None


class WebsockifyClient:
    """websockify's WebSocket object (non-blocking: it raises WantRead/WantWrite) driven by
    this process's event loop, as the gate's client."""

    via: str = ConsoleSession.Via.WEBSOCKIFY

    def __init__(self, websocket, address: str | None) -> None:  # noqa: ANN001 - websockify's untyped class
        self.ws = websocket
        self.address = address
        self.sock: socket.socket = websocket.socket
        self.sock.setblocking(False)
        self.loop = asyncio.get_running_loop()
        self.closed = False

    async def _ready(self, add, remove) -> None:  # noqa: ANN001 - the loop's add_/remove_reader or _writer
        future = self.loop.create_future()

        def ready() -> None:
            if not future.done():
                future.set_result(None)

        add(self.sock.fileno(), ready)
        try:
            await future
        finally:
            remove(self.sock.fileno())

    async def receive(self) -> bytes | None:
        while True:
            try:
                message = self.ws.recvmsg()
            except WebSocketWantReadError:
                await self._ready(self.loop.add_reader, self.loop.remove_reader)
                continue
            except WebSocketWantWriteError:  # a pong or close it owes the peer
                await self._ready(self.loop.add_writer, self.loop.remove_writer)
                continue
            except OSError:
                message = None
            if message is None:
                self.closed = True
                return None
            if message:
                return message

    async def send(self, data: bytes) -> None:
        while True:
            try:
                self.ws.sendmsg(data)  # after WantWrite, called again with the same message
                return
            except WebSocketWantWriteError:
                await self._ready(self.loop.add_writer, self.loop.remove_writer)

    async def opened(self) -> None:
        pass

    def gone_reason(self) -> str:
        return "client closed"

    async def end(self, end: End, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        short = reason.encode()[:123].decode(errors="ignore")
        for _ in range(50):
            try:
                self.ws.shutdown(socket.SHUT_RDWR, int(end), short)
                break
            except WebSocketWantWriteError:
                await self._ready(self.loop.add_writer, self.loop.remove_writer)
            except OSError:
                break


class TicketProxyRequestHandler(ProxyRequestHandler):
    """websockify's handler: the handshake, then the gate."""

    def validate_connection(self):
        pass  # the gate admits the connection, after the handshake

    def new_websocket_client(self):
        slots = self.server.connection_slots
        if not slots.acquire(block=False):
            raise self.CClose(End.PROXY_BUSY, "the console proxy is at its connection limit")
        try:
            # websockify forked this process for the connection: never share the parent's
            # database connections.
            connections.close_all()
            asyncio.run(self._serve())
        finally:
            slots.release()
            connections.close_all()

    async def _serve(self) -> None:
        token = parse_qs(urlsplit(self.path).query).get("token", [""])[0]
        origin = origin_normalize(self.headers.get("Origin")) or ""
        client = WebsockifyClient(self.request, client_ip(self.client_address[0]))

        def admit() -> ConsoleTicket:
            return console_ticket_admit(token=token, kind=ConsoleTicket.Kind.WEBSOCKIFY, origin=origin)

        with contextlib.suppress(ConnectionError):
            await console_serve(client, admit)

    def log_message(self, format, *args):
        # websockify logs every request's path, and the path carries the ticket.
        super().log_message("%s", redact_tokens(format % args))


def websockify_proxy(host: str, port: int, *, verbose: bool = False) -> WebSocketProxy:
    """A websockify server for console tickets, not yet started."""
    connections.close_all()
    proxy = WebSocketProxy(
        RequestHandlerClass=TicketProxyRequestHandler,
        listen_host=host,
        listen_port=port,
        token_plugin=TicketTokens(),
        web=None,  # never serve files
        verbose=verbose,
    )
    # Shared with the per-connection processes websockify forks.
    proxy.connection_slots = multiprocessing.BoundedSemaphore(settings.PROXY_MAX_CONNECTIONS)
    return proxy
