"""The browser console proxy: a WebSocket at /ws/console/<vm id>/?token=<ticket> relayed to the VM.

Checks, in order: the Origin is one of ours, the user is logged in, the ticket is theirs, for
this VM, unexpired and not used up. A refused socket is accepted only to be closed with the
refusal's code (see `tickets.Refusal`), and no byte is relayed.
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import parse_qs, urlsplit

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.http.request import split_domain_port, validate_host

from console.models import ConsoleSession
from console.relay import ConsoleLink
from console.sessions import console_session_end, console_session_start
from console.tickets import Refusal, TicketRefused, console_ticket_admit

logger = logging.getLogger(__name__)

CLOSE_UNREACHABLE = 4010  # the VM's console does not accept connections
CLOSE_CONSOLE_ENDED = 4011  # the VM closed the console (shut down, restarted)


def origin_allowed(headers: list[tuple[bytes, bytes]]) -> bool:
    """The Origin header names one of ALLOWED_HOSTS (browsers always send it)."""
    origin = dict(headers).get(b"origin", b"").decode("latin-1")
    host = urlsplit(origin).netloc
    if not host:
        return False
    domain, _port = split_domain_port(host)
    return bool(domain) and validate_host(domain, settings.ALLOWED_HOSTS)


class ConsoleProxyConsumer(AsyncWebsocketConsumer):
    channel_layer_alias = None  # the proxy talks to no other consumer; skip the layer

    link: ConsoleLink | None = None
    pump: asyncio.Task | None = None
    session_id: int | None = None
    end_reason = "client closed"

    async def connect(self) -> None:
        subprotocol = "binary" if "binary" in self.scope.get("subprotocols", ()) else None
        try:
            ticket = await self._admit()
        except TicketRefused as refused:
            await self._refuse(subprotocol, refused.refusal.value, refused.refusal.message)
            return
        try:
            self.link = await ConsoleLink.open(ticket.address, ticket.port)
        except (OSError, asyncio.TimeoutError) as exc:
            logger.warning("console of %s at %s:%s unreachable: %s", ticket.vm, ticket.address, ticket.port, exc)
            await self._refuse(subprotocol, CLOSE_UNREACHABLE, "console unreachable")
            return
        client = self.scope.get("client") or (None,)
        session = await database_sync_to_async(console_session_start)(
            ticket=ticket, via=ConsoleSession.Via.CHANNELS, client_address=client[0]
        )
        self.session_id = session.pk
        await self.accept(subprotocol)
        self.pump = asyncio.create_task(self._pump())

    async def receive(self, text_data=None, bytes_data=None) -> None:
        if bytes_data is not None and self.link is not None:
            await self.link.write(bytes_data)

    async def disconnect(self, code) -> None:
        if self.pump is not None and self.pump is not asyncio.current_task():
            self.pump.cancel()
            try:
                await self.pump
            except asyncio.CancelledError:
                pass
        if self.link is not None:
            await self.link.close()
        if self.session_id is not None:
            await database_sync_to_async(console_session_end)(
                session_id=self.session_id,
                bytes_to_client=self.link.bytes_to_client,
                bytes_from_client=self.link.bytes_from_client,
                reason=self.end_reason,
            )
            self.session_id = None

    async def _admit(self):
        if not origin_allowed(self.scope.get("headers", [])):
            raise TicketRefused(Refusal.FOREIGN_ORIGIN)
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            raise TicketRefused(Refusal.NOT_LOGGED_IN)
        token = parse_qs(self.scope.get("query_string", b"").decode("latin-1")).get("token", [""])[0]
        return await database_sync_to_async(console_ticket_admit)(
            token=token, user=user, vm_id=self.scope["url_route"]["kwargs"]["vm_id"]
        )

    async def _refuse(self, subprotocol: str | None, code: int, reason: str) -> None:
        # Accepted only so the client learns why; nothing is relayed.
        await self.accept(subprotocol)
        await self.close(code=code, reason=reason)

    async def _pump(self) -> None:
        self.end_reason = await self.link.pump_to(self._send_bytes)
        await self.close(code=CLOSE_CONSOLE_ENDED, reason=self.end_reason)

    async def _send_bytes(self, data: bytes) -> None:
        await self.send(bytes_data=data)
