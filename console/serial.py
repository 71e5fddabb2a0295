"""The serial console proxy: a WebSocket at /ws/serial/<vm id>/?token=<ticket> bridged to the
VM's serial console, which the portal opens through libvirt's console stream API.

No port is involved: the stream runs over the portal's libvirt connection, so a VM on a
remote host needs nothing more than the host's libvirt URI. The same checks as the graphical
consoles admit a connection (Origin, login, a ticket of kind "serial" for this VM and domain
instance) and `console.guard` keeps checking the right to it while it stays open.

libvirt lets one client at a time hold a domain's console. A second user is refused with the
holder's name (close code 4018); staff may take it over (`&takeover=1`), which ends the
holder's page with 4019 naming who took it. Binary frames carry the terminal's bytes both
ways; a text frame `{"reason": ...}` says why, just before the close (Daphne drops close
reasons, and these name people).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async

from console.consumers import CLOSE_CONSOLE_ENDED, CLOSE_SERVICE_RESTART, ConsoleConsumer, websocket_admit
from console.guard import session_guard
from console.hypervisor import (
    ACTIVE_STATES,
    ConsoleBusy,
    DomainNotFound,
    DomainNotRunning,
    HypervisorError,
    HypervisorUnavailable,
    SerialStream,
    hypervisor_for,
)
from console.metrics import REFUSALS
from console.models import ConsoleSession, ConsoleTicket, VirtualMachine
from console.sessions import console_session_end, console_session_start, serial_console_holder
from console.tickets import Refusal, TicketRefused

if TYPE_CHECKING:
    from starlette.types import Receive, Scope, Send

logger = logging.getLogger(__name__)

# Output waiting for a slow browser: reading from the guest stops above the high mark and
# resumes below the low one, so a `cat` of a large file cannot grow the worker's memory.
OUTPUT_HIGH_WATER = 1 << 20
OUTPUT_LOW_WATER = 256 << 10
CLOSE_REASON_MAX = 123  # bytes a WebSocket close reason may carry


def _reason(text: str) -> str:
    return text.encode()[:CLOSE_REASON_MAX].decode(errors="ignore")


class SerialConsoleConsumer(ConsoleConsumer[tuple[ConsoleTicket, ConsoleSession, SerialStream]]):
    """One serial console session: the WebSocket bridged to libvirt's console stream."""

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        super().__init__(scope, receive, send)
        self.loop = asyncio.get_running_loop()
        self.output: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.queued = 0
        self.paused = False
        self.stream: SerialStream | None = None
        self.session: ConsoleSession | None = None
        self.bytes_to_client = self.bytes_from_client = 0

    def recorded(self) -> bool:
        return self.session is not None

    async def connect(self) -> tuple[ConsoleTicket, ConsoleSession, SerialStream] | None:
        """Admit the connection and open the serial console, or refuse it (saying why: None)."""
        try:
            admit = database_sync_to_async(websocket_admit)
            ticket = await admit(scope=self.scope, kind=ConsoleTicket.Kind.SERIAL)
        except TicketRefused as refused:
            REFUSALS.labels(refused.refusal.name.lower()).inc()
            await self._refuse(refused.refusal.value, refused.refusal.message)
            return None
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        takeover = query.get("takeover", [""])[0] == "1" and ticket.user.is_staff
        client = self.scope.get("client") or (None,)
        # Recorded before the console is opened, so a holder whose console this takes over
        # finds who took it.
        self.session = session = await database_sync_to_async(console_session_start)(
            ticket=ticket, via=ConsoleSession.Via.CHANNELS, client_address=client[0]
        )
        try:
            try:
                self.stream = stream = await self._open(ticket, force=takeover)
            except ConsoleBusy:
                holder = await database_sync_to_async(serial_console_holder)(
                    vm_id=ticket.vm_id, besides=session.pk
                )
                if holder is None or holder.user_id != ticket.user_id:
                    who = _name(holder) if holder else "someone outside the portal (virsh console?)"
                    self.end_reason = "serial console busy"
                    await self._refuse(
                        Refusal.SERIAL_BUSY.value, _reason(f"{who} has the serial console open")
                    )
                    return None
                # Their own console, in another window or a page being reloaded: move it here.
                self.stream = stream = await self._open(ticket, force=True)
        except (DomainNotRunning, DomainNotFound):
            self.end_reason = Refusal.VM_RESTARTED.message
            await self._refuse(Refusal.VM_RESTARTED.value, Refusal.VM_RESTARTED.message)
            return None
        except HypervisorUnavailable:
            self.end_reason = Refusal.HOST_DOWN.message
            await self._refuse(Refusal.HOST_DOWN.value, Refusal.HOST_DOWN.message)
            return None
        except HypervisorError as exc:
            logger.warning("serial console of %s: %s", ticket.vm, exc)
            self.end_reason = "console unavailable"
            await self._refuse(4010, _reason(str(exc)))
            return None
        if takeover:
            logger.info("%s took over the serial console of %s", ticket.user, ticket.vm)
        session_guard().watch(
            session.pk,
            ticket.pk,
            self._right_gone,
            lambda: (self.bytes_to_client, self.bytes_from_client),
        )
        await self.send({"type": "websocket.accept"})
        return ticket, session, stream

    async def _open(self, ticket: ConsoleTicket, *, force: bool) -> SerialStream:
        open_serial = sync_to_async(hypervisor_for(ticket.vm.host).open_serial, thread_sensitive=False)
        return await open_serial(ticket.vm.name, on_output=self._output, force=force)

    async def relay(self, opened: tuple[ConsoleTicket, ConsoleSession, SerialStream]) -> None:
        """Keystrokes to the guest here; the guest's output to the client in a second task."""
        ticket, session, stream = opened
        pump = asyncio.create_task(self._pump(ticket, session))
        write = sync_to_async(stream.write, thread_sensitive=False)
        try:
            while True:
                message = await self.receive()
                data = message.get("bytes") or (message.get("text") or "").encode()
                if data:
                    self.bytes_from_client += len(data)
                    session_guard().input_seen(session.pk)
                    await write(data)
                elif message["type"] == "websocket.disconnect":
                    if message.get("code") == CLOSE_SERVICE_RESTART:
                        self.end_reason = "worker stopped"
                    break
        finally:
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)

    async def disconnect(self) -> None:
        if self.stream is not None:
            await sync_to_async(self.stream.close, thread_sensitive=False)()
        if self.session is not None:
            session_guard().forget(self.session.pk)
            await database_sync_to_async(console_session_end)(
                session_id=self.session.pk,
                bytes_to_client=self.bytes_to_client,
                bytes_from_client=self.bytes_from_client,
                reason=self.end_reason,
            )
            self.session = None

    # -- the guest's output, from libvirt's event thread to this loop ------------------------

    def _output(self, data: bytes | None) -> None:
        """Called in libvirt's event loop thread."""
        self.loop.call_soon_threadsafe(self._queue, data)

    def _queue(self, data: bytes | None) -> None:
        self.output.put_nowait(data)
        if data:
            self.queued += len(data)
            if not self.paused and self.queued > OUTPUT_HIGH_WATER:
                self._pause(True)

    def _pause(self, paused: bool) -> None:
        self.paused = paused
        if self.stream is not None:
            self.loop.run_in_executor(None, self.stream.pause, paused)

    async def _pump(self, ticket: ConsoleTicket, session: ConsoleSession) -> None:
        while (data := await self.output.get()) is not None:
            self.queued -= len(data)
            if self.paused and self.queued < OUTPUT_LOW_WATER:
                self._pause(False)
            self.bytes_to_client += len(data)
            await self.send({"type": "websocket.send", "bytes": data})
        code, reason = await self._why_ended(ticket, session)
        self.end_reason = reason
        await self._close(code, reason)

    async def _why_ended(self, ticket: ConsoleTicket, session: ConsoleSession) -> tuple[int, str]:
        if self.ended is not None:
            return self.ended.value, self.ended.message
        taker = await database_sync_to_async(serial_console_holder)(
            vm_id=ticket.vm_id, besides=session.pk, since=session.started_at
        )
        if taker is not None and taker.user_id == ticket.user_id:
            return Refusal.TAKEN_OVER.value, "you opened the serial console in another window"
        if taker is not None:
            return Refusal.TAKEN_OVER.value, f"{_name(taker)} took over the serial console"
        state = await self._state_settled(ticket.vm)
        if state not in ACTIVE_STATES:
            return CLOSE_CONSOLE_ENDED, f"the VM stopped ({state})"
        return CLOSE_CONSOLE_ENDED, "the VM closed its serial console"

    async def _state_settled(self, vm: VirtualMachine, wait: float = 3.0) -> str:
        """The VM's state once it settles: QEMU closes the console a moment before it exits."""
        hypervisor = hypervisor_for(vm.host)
        deadline = self.loop.time() + wait
        while True:
            try:
                state = await sync_to_async(hypervisor.state, thread_sensitive=False)(vm.name)
            except HypervisorError:
                return "unknown"
            if state not in ACTIVE_STATES or self.loop.time() > deadline:
                return state
            await asyncio.sleep(0.2)

    async def _right_gone(self, refusal: Refusal) -> None:
        """The guard found the user's right to this console gone: end it, saying why."""
        self.ended = refusal
        if self.stream is not None:
            await sync_to_async(self.stream.close, thread_sensitive=False)()
        self.output.put_nowait(None)

    async def _refuse(self, code: int, reason: str) -> None:
        logger.info("serial console of VM %s refused: %s", self.scope["url_route"]["kwargs"]["vm_id"], reason)
        await self.send({"type": "websocket.accept"})
        await self._close(code, reason)

    async def _close(self, code: int, reason: str) -> None:
        await self.send({"type": "websocket.send", "text": json.dumps({"reason": reason})})
        await self.send({"type": "websocket.close", "code": code, "reason": _reason(reason)})


def _name(session: ConsoleSession) -> str:
    return session.user.get_username() if session.user else "a deleted user"
