"""The browser console proxy: a WebSocket at /ws/console/<vm id>/?token=<ticket> relayed to the VM.

Checks, in order: the Origin is this portal's own (scheme, host and port), the user is logged
in, the ticket is theirs, for this path, this VM and the domain instance now running,
unexpired and not used up, and the right it was issued on still holds. A refused socket is
accepted only to be closed with the refusal's code (see `tickets.Refusal`), and no byte is
relayed. While the console stays open, `console.guard` checks that right again every few
seconds and ends the console with the refusal's code when it is gone.

It is a plain ASGI application with consumer-style lifecycle methods rather than a Channels
`AsyncWebsocketConsumer`: the generic consumer spends a thread-pool round trip
(`aclose_old_connections`) and a task per received message, which capped the relay at a
fraction of websockify's message rate (see README, Performance). For the same reason it reads
the session cookie itself instead of sitting behind Channels' session middleware, which wraps
every outgoing message. The database is touched only at connect and disconnect, in
`database_sync_to_async` helpers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from importlib import import_module
from typing import TYPE_CHECKING, Generic, TypeVar
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import get_user
from django.http import HttpRequest
from django.http.cookie import parse_cookie
from prometheus_client import Histogram

from console.globalconfig import CLIPBOARD, config_value
from console.guard import session_guard
from console.metrics import CLIPBOARD_BLOCKED, FIRST_BYTE, REFUSALS
from console.models import ConsoleSession, ConsoleTicket
from console.origins import websocket_origin_allowed
from console.relay import ConsoleLink
from console.rfb import VIEW_ONLY_DROPS, RfbClientFilter, RfbProtocolError
from console.sessions import console_session_end, console_session_start
from console.tickets import Refusal, TicketRefused, console_ticket_admit, ticket_kind
from console.tunnels import console_connect

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

    from console.auth import AnonymousUser, User

logger = logging.getLogger(__name__)
Opened = TypeVar("Opened")

CLOSE_SERVICE_RESTART = 1012  # the worker is stopping; the page reconnects with a fresh ticket
CLOSE_UNREACHABLE = 4010  # the VM's console does not accept connections
CLOSE_CONSOLE_ENDED = 4011  # the VM closed the console (shut down, restarted)
ACTIVITY = '{"activity":1}'  # a text frame from the VNC page (key or mouse used); never relayed
SPICE_LINK_MAGIC = b"REDQ"
SPICE_CHANNEL_INPUTS = 3  # SpiceLinkMess.channel_type, at byte 20 of a channel's first message


def spice_inputs_channel(first: bytes) -> bool:
    """Whether a SPICE connection's first client message links the inputs channel (keyboard,
    mouse): everything the client sends on it afterwards is the user's input."""
    return len(first) > 20 and first[:4] == SPICE_LINK_MAGIC and first[20] == SPICE_CHANNEL_INPUTS


def user_from_session_cookie(headers: list[tuple[bytes, bytes]]) -> User | AnonymousUser:
    """The user logged in with the request's session cookie (AnonymousUser if none), as
    Django's own authentication middleware would find them."""
    cookies = parse_cookie(dict(headers).get(b"cookie", b"").decode("latin-1"))
    request = HttpRequest()
    request.session = import_module(settings.SESSION_ENGINE).SessionStore(
        cookies.get(settings.SESSION_COOKIE_NAME)
    )
    return get_user(request)


def websocket_admit(*, scope: Scope, kind: str = ConsoleTicket.Kind.BROWSER) -> ConsoleTicket:
    """Who is asking and whether their ticket admits them (blocking: the database, libvirt).

    A page's ticket needs the page's own origin and its login cookie. A ticket issued through
    the API, for embedding a console in another front end, is admitted on its own (no cookie
    is sent cross-site), from the origin it was issued for, if one was given.
    """
    token = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [""])[0]
    vm_id = scope["url_route"]["kwargs"]["vm_id"]
    if kind == ConsoleTicket.Kind.BROWSER and ticket_kind(token) == ConsoleTicket.Kind.API:
        origin = dict(scope.get("headers", [])).get(b"origin", b"").decode("latin-1")
        return console_ticket_admit(token=token, kind=ConsoleTicket.Kind.API, origin=origin, vm_id=vm_id)
    origin = websocket_origin_allowed(scope)
    if origin is None:
        raise TicketRefused(Refusal.FOREIGN_ORIGIN)
    user = user_from_session_cookie(scope.get("headers", []))
    if not user.is_authenticated:
        raise TicketRefused(Refusal.NOT_LOGGED_IN)
    return console_ticket_admit(token=token, kind=kind, origin=origin, user=user, vm_id=vm_id)


class ConsoleConsumer(Generic[Opened]):
    """The lifecycle both console WebSockets share: connect (admit, open: `Opened`, or None
    when refused), relay until either side ends, disconnect (record the session's end)."""

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scope, self.receive, self.send = scope, receive, send
        self.end_reason = "client closed"
        self.ended: Refusal | None = None

    @classmethod
    def as_asgi(cls) -> ASGIApp:
        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            await cls(scope, receive, send).run()

        return app

    async def run(self) -> None:
        if (await self.receive())["type"] != "websocket.connect":
            return
        try:
            opened = await self.connect()
            if opened is not None:
                await self.relay(opened)
            else:
                while (await self.receive())["type"] != "websocket.disconnect":
                    pass
        except asyncio.CancelledError:
            # The server is stopping (SIGTERM): tell the page, which reconnects through
            # another worker, and record the end before going.
            if self.recorded():
                self.end_reason = "worker stopped"
                with contextlib.suppress(Exception):
                    await self.send({"type": "websocket.close", "code": CLOSE_SERVICE_RESTART})
            raise
        finally:
            await self.disconnect()

    async def connect(self) -> Opened | None:
        raise NotImplementedError

    async def relay(self, opened: Opened) -> None:
        raise NotImplementedError

    async def disconnect(self) -> None:
        raise NotImplementedError

    def recorded(self) -> bool:
        """Whether a session was recorded (and so must be ended)."""
        raise NotImplementedError


class ConsoleProxyConsumer(ConsoleConsumer[tuple[ConsoleLink, int]]):
    """One graphical console session: the WebSocket relayed to the console's TCP port."""

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        super().__init__(scope, receive, send)
        self.link: ConsoleLink | None = None
        self.session_id: int | None = None
        self.protocol = ""
        self.clipboard_filter: RfbClientFilter | None = None
        self.view_only = False
        offered = scope.get("subprotocols") or ()
        self.subprotocol = "binary" if "binary" in offered else None

    def recorded(self) -> bool:
        return self.session_id is not None

    async def connect(self) -> tuple[ConsoleLink, int] | None:
        """Admit the connection and open its console: the link and the session's id, or None
        when refused (the client has been told why).

        The handshake is accepted first, before the checks: a refusal is a close code on an
        accepted socket anyway (so the page can say why), and nothing is relayed before the
        checks pass. Browsers open one WebSocket at a time per host: a SPICE client's seven
        channels each waited for the one before it to be admitted (measured: 30 to 50 ms each,
        before the first frame); now the browser opens them all at once."""
        await self.send({"type": "websocket.accept", "subprotocol": self.subprotocol})
        try:
            ticket = await self._admit()
        except TicketRefused as refused:
            REFUSALS.labels(refused.refusal.name.lower()).inc()
            logger.info(
                "console of VM %s refused for %s: %s",
                self.scope["url_route"]["kwargs"]["vm_id"],
                (self.scope.get("client") or ("?",))[0],
                refused.refusal.message,
            )
            await self._refuse(refused.refusal.value, refused.refusal.message)
            return None
        try:
            self.link = link = await console_connect(ticket.ssh, ticket.address, ticket.port)
        except (OSError, asyncio.TimeoutError) as exc:
            logger.warning(
                "console of %s at %s:%s unreachable: %s", ticket.vm, ticket.address, ticket.port, exc
            )
            await self._refuse(CLOSE_UNREACHABLE, "console unreachable")
            return None
        client = self.scope.get("client") or (None,)
        session = await database_sync_to_async(console_session_start)(
            ticket=ticket, via=ConsoleSession.Via.CHANNELS, client_address=client[0]
        )
        self.session_id = session.pk
        session_guard().watch(
            session.pk, ticket.pk, self._right_gone, lambda: (link.bytes_to_client, link.bytes_from_client)
        )
        self.protocol = ticket.protocol
        self.view_only = ticket.view_only
        if ticket.protocol == "vnc" and ticket.view_only:
            self.clipboard_filter = RfbClientFilter(VIEW_ONLY_DROPS)  # watch only: no keys, mouse, clipboard
        elif ticket.protocol == "vnc" and await self._clipboard_policy() not in ("both", "to-vm"):
            self.clipboard_filter = RfbClientFilter()  # console.clipboard keeps the client's out
        return link, session.pk

    async def relay(self, opened: tuple[ConsoleLink, int]) -> None:
        """Client frames to the console here; console bytes to the client in a second task."""
        link, session_id = opened
        pump = asyncio.create_task(self._pump(link))
        receive, guard = self.receive, session_guard()
        first, inputs, refused = True, False, False
        try:
            while True:
                message = await receive()
                data = message.get("bytes")
                if data and refused:
                    continue
                if data:
                    if first:
                        first, inputs = False, spice_inputs_channel(data)
                        if inputs and self.view_only:
                            # SPICE has no shared read-only mode: a watcher gets no inputs channel
                            # (the pump closes the socket with the refusal's code).
                            self.ended, refused = Refusal.VIEW_ONLY, True
                            await link.close()
                            continue
                    elif inputs:
                        guard.input_seen(session_id)
                    if self.clipboard_filter is not None:
                        data = self._without_clipboard(self.clipboard_filter, link, data)
                    link.write(data)
                    await link.drain()
                elif message.get("text") == ACTIVITY:
                    guard.input_seen(session_id)
                elif message["type"] == "websocket.disconnect":
                    if message.get("code") == CLOSE_SERVICE_RESTART:  # uvicorn, shutting down
                        self.end_reason = "worker stopped"
                    break
        finally:
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)

    def _without_clipboard(self, clipboard_filter: RfbClientFilter, link: ConsoleLink, data: bytes) -> bytes:
        try:
            return clipboard_filter.feed(data)
        except RfbProtocolError as exc:
            # Not a message noVNC sends: end the console rather than let something unread through.
            logger.warning("ending a VNC console: %s not understood by the clipboard filter", exc)
            self.end_reason = "protocol not understood"
            self.clipboard_filter = None
            asyncio.get_running_loop().create_task(link.close())
            return b""

    async def disconnect(self) -> None:
        if self.clipboard_filter is not None and self.clipboard_filter.dropped_messages:
            logger.info(
                "console session %s: kept %d clipboard transfer(s), %d bytes, from the VM",
                self.session_id,
                self.clipboard_filter.dropped_messages,
                self.clipboard_filter.dropped_bytes,
            )
            CLIPBOARD_BLOCKED.inc(self.clipboard_filter.dropped_bytes)
        link = self.link
        if link is not None:
            await link.close()
        if self.session_id is not None:
            session_guard().forget(self.session_id)
            await database_sync_to_async(console_session_end)(
                session_id=self.session_id,
                bytes_to_client=link.bytes_to_client if link else 0,
                bytes_from_client=link.bytes_from_client if link else 0,
                reason=self.end_reason,
            )
            self.session_id = None

    async def _clipboard_policy(self) -> str:
        return await database_sync_to_async(config_value)(CLIPBOARD)

    async def _admit(self) -> ConsoleTicket:
        return await database_sync_to_async(websocket_admit)(scope=self.scope)

    async def _right_gone(self, refusal: Refusal) -> None:
        """The guard found the user's right to this console gone: end it, saying why."""
        self.ended = refusal
        if self.link is not None:
            await self.link.close()  # the pump then closes the WebSocket with the refusal's code

    async def _refuse(self, code: int, reason: str) -> None:
        # (Accepted, so the client learns why; nothing was relayed.)
        await self.send({"type": "websocket.close", "code": code, "reason": reason})

    async def _pump(self, link: ConsoleLink) -> None:
        send = self.send
        opened = asyncio.get_running_loop().time()
        first_byte: Histogram | None = FIRST_BYTE.labels(self.protocol)

        async def to_client(data: bytes) -> None:
            nonlocal first_byte
            if first_byte is not None:
                first_byte.observe(asyncio.get_running_loop().time() - opened)
                first_byte = None
            await send({"type": "websocket.send", "bytes": data})

        self.end_reason = await link.pump_to(to_client)
        code = CLOSE_CONSOLE_ENDED
        if self.ended is not None:
            code, self.end_reason = self.ended.value, self.ended.message
        await send({"type": "websocket.close", "code": code, "reason": self.end_reason})
