"""The portal's console WebSockets, as ASGI applications: /ws/console/<vm id>/?token=<ticket>
(VNC, SPICE) and /ws/serial/<vm id>/?token=<ticket> (the serial console).

Transport only: the handshake is accepted at once (browsers open one WebSocket at a time per
host, so SPICE's channels would otherwise wait for each other's checks), then the gate admits
the connection — the Origin is this portal's own (scheme, host and port), the user logged in
with the session cookie, the ticket theirs, for this path, VM and domain instance — and runs
it. Nothing is relayed before the checks pass; a refusal is a close code.

A plain ASGI application rather than a Channels consumer: the generic consumer spent a
thread-pool round trip and a task per received message, and Channels' session middleware
wraps every outgoing message (see README, Performance); the session cookie is read here, in
the same database trip as the ticket.
"""

from __future__ import annotations

import json
from importlib import import_module
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from django.conf import settings
from django.contrib.auth import get_user
from django.http import HttpRequest
from django.http.cookie import parse_cookie

from console.errors import End, Refused
from console.models import ConsoleSession, ConsoleTicket
from console.origins import client_ip, websocket_origin_allowed
from console.proxy.gate import console_serve
from console.tickets import console_ticket_admit, ticket_kind

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

    from console.auth import AnonymousUser, User

CLOSE_REASON_MAX = 123  # bytes a WebSocket close reason may carry


def user_from_session_cookie(headers: list[tuple[bytes, bytes]]) -> User | AnonymousUser:
    """The user logged in with the request's session cookie (AnonymousUser if none), as
    Django's own authentication middleware would find them."""
    cookies = parse_cookie(dict(headers).get(b"cookie", b"").decode("latin-1"))
    request = HttpRequest()
    request.session = import_module(settings.SESSION_ENGINE).SessionStore(
        cookies.get(settings.SESSION_COOKIE_NAME)
    )
    return get_user(request)


def websocket_admit(*, scope: Scope, kind: str) -> ConsoleTicket:
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
        raise Refused(End.FOREIGN_ORIGIN)
    user = user_from_session_cookie(scope.get("headers", []))
    if not user.is_authenticated:
        raise Refused(End.NOT_LOGGED_IN)
    return console_ticket_admit(token=token, kind=kind, origin=origin, user=user, vm_id=vm_id)


class WebSocketClient:
    """One console WebSocket as the gate's client. `reason_frames`: a text frame
    `{"reason": ..., "code": ...}` goes before the close (Daphne drops close reasons; the serial
    page shows them, and they may name the user holding the console; and a close handshake that
    does not finish reaches the page as 1006, so the code goes with the reason)."""

    via: str = ConsoleSession.Via.CHANNELS

    def __init__(self, scope: Scope, receive: Receive, send: Send, *, reason_frames: bool) -> None:
        self._receive, self._send = receive, send
        self.reason_frames = reason_frames
        self.address = client_ip((scope.get("client") or (None,))[0])
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        self.takeover = query.get("takeover", [""])[0] == "1"  # the serial console's Take over
        self.closed = self.stopping = False

    async def receive(self) -> bytes | None:
        receive = self._receive
        while True:
            message = await receive()
            data = message.get("bytes")
            if data:
                return data
            if message["type"] == "websocket.disconnect":
                self.closed = True
                self.stopping = message.get("code") == End.WORKER_STOPPING  # uvicorn shutting down
                return None
            text = message.get("text")
            if text and self.reason_frames:  # xterm.js's keystrokes may come as text
                return text.encode()

    async def send(self, data: bytes) -> None:
        await self._send({"type": "websocket.send", "bytes": data})

    async def send_text(self, text: str) -> None:
        await self._send({"type": "websocket.send", "text": text})

    async def opened(self) -> None:
        pass

    def gone_reason(self) -> str:
        return End.WORKER_STOPPING.reason if self.stopping else "client closed"

    async def end(self, end: End, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        if self.reason_frames:
            await self.send_text(json.dumps({"reason": reason, "code": int(end)}))
        short = reason.encode()[:CLOSE_REASON_MAX].decode(errors="ignore")
        await self._send({"type": "websocket.close", "code": int(end), "reason": short})


def console_websocket(kind: str) -> ASGIApp:
    """The ASGI application of one console WebSocket path (`kind`: browser or serial)."""
    serial = kind == ConsoleTicket.Kind.SERIAL

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        offered = scope.get("subprotocols") or ()
        await send({"type": "websocket.accept", "subprotocol": "binary" if "binary" in offered else None})
        client = WebSocketClient(scope, receive, send, reason_frames=serial)
        await console_serve(client, lambda: websocket_admit(scope=scope, kind=kind))

    return app
