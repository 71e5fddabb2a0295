"""The serial console as a gate's console: libvirt's console stream, opened by the portal over
its own libvirt connection (no port, so a VM on a remote host needs nothing more than its
host's libvirt URI).

libvirt lets one client at a time hold a domain's console. A second user is refused with the
holder's name (4018); staff may take it over (`takeover`), which ends the holder's page with
4019 naming who took it; the same user opening it in another window moves it there. The
holder is the session that opened the console last: a session still opening holds nothing,
so two windows of one user opened at once never count as the holder for each other.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async

from console.errors import End, Refused
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
from console.models import ConsoleSession, VirtualMachine
from console.proxy.base import Opener
from console.sessions import console_session_established, serial_console_holder

logger = logging.getLogger(__name__)

# Output waiting for a slow browser: reading from the guest stops above the high mark and
# resumes below the low one, so a `cat` of a large file cannot grow the worker's memory.
OUTPUT_HIGH_WATER = 1 << 20
OUTPUT_LOW_WATER = 256 << 10


class SerialLink:
    """An open serial console as the gate's console: the guest's output comes from libvirt's
    event thread into a queue this event loop reads."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.output: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.queued = 0
        self.paused = False
        self.stream: SerialStream | None = None
        self.bytes_to_client = self.bytes_from_client = 0
        self._pending: list[bytes] = []

    def on_output(self, data: bytes | None) -> None:
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

    async def pump_to(self, send: Callable[[bytes], Awaitable[None]]) -> str:
        while (data := await self.output.get()) is not None:
            self.queued -= len(data)
            if self.paused and self.queued < OUTPUT_LOW_WATER:
                self._pause(False)
            self.bytes_to_client += len(data)
            await send(data)
        return "console closed"

    def write(self, data: bytes) -> None:
        self.bytes_from_client += len(data)
        self._pending.append(data)

    async def drain(self) -> None:
        if self._pending and self.stream is not None:
            data, self._pending = b"".join(self._pending), []
            await sync_to_async(self.stream.write, thread_sensitive=False)(data)

    async def close(self) -> None:
        stream, self.stream = self.stream, None
        if stream is not None:
            await sync_to_async(stream.close, thread_sensitive=False)()
        self.output.put_nowait(None)


def _name(session: ConsoleSession) -> str:
    return session.user.get_username() if session.user else "a deleted user"


class SerialOpener(Opener):
    """Opens the serial console (its session was recorded at admission, so a holder whose
    console this takes over finds who took it)."""

    async def open(self) -> bytes:
        gate = self.gate
        ticket = gate.ticket
        takeover = bool(getattr(gate.client, "takeover", False)) and ticket.user.is_staff
        link = SerialLink()
        gate.console = link
        try:
            try:
                link.stream = await self._open(link, force=takeover)
            except ConsoleBusy:
                holder = await database_sync_to_async(serial_console_holder)(
                    vm_id=ticket.vm_id, besides=gate.session_id
                )
                if holder is None or holder.user_id != ticket.user_id:
                    who = _name(holder) if holder else "someone outside the portal (virsh console?)"
                    raise Refused(End.SERIAL_BUSY, f"{who} has the serial console open") from None
                # Their own console, in another window or a page being reloaded: move it here.
                link.stream = await self._open(link, force=True)
        except (DomainNotRunning, DomainNotFound):
            raise Refused(End.VM_RESTARTED) from None
        except HypervisorUnavailable:
            raise Refused(End.HOST_DOWN) from None
        except HypervisorError as exc:
            logger.warning("serial console of %s: %s", ticket.vm, exc)
            raise Refused(End.UNREACHABLE, str(exc)) from None
        if takeover:
            logger.info("%s took over the serial console of %s", ticket.user, ticket.vm)
        # At once, not with the next heartbeat: the holder of the console is the session that
        # opened it last.
        await database_sync_to_async(console_session_established)(session_id=gate.session_id or 0)
        await gate.client.opened()
        return b""

    async def _open(self, link: SerialLink, *, force: bool) -> SerialStream:
        ticket = self.gate.ticket
        open_serial = sync_to_async(hypervisor_for(ticket.vm.host).open_serial, thread_sensitive=False)
        return await open_serial(ticket.vm.name, on_output=link.on_output, force=force)

    async def why_ended(self, reason: str) -> tuple[End, str]:
        ticket = self.gate.ticket
        session_id = self.gate.session_id or 0
        session = await database_sync_to_async(ConsoleSession.objects.filter(pk=session_id).first)()
        if session is not None:
            taker = await database_sync_to_async(serial_console_holder)(
                vm_id=ticket.vm_id, besides=session.pk, since=session.started_at
            )
            if taker is not None and taker.user_id == ticket.user_id:
                return End.TAKEN_OVER, "you opened the serial console in another window"
            if taker is not None:
                return End.TAKEN_OVER, f"{_name(taker)} took over the serial console"
        state = await self._state_settled(ticket.vm)
        if state not in ACTIVE_STATES:
            return End.CONSOLE_ENDED, f"the VM stopped ({state})"
        return End.CONSOLE_ENDED, "the VM closed its serial console"

    @staticmethod
    async def _state_settled(vm: VirtualMachine, wait: float = 3.0) -> str:
        """The VM's state once it settles: QEMU closes the console a moment before it exits."""
        hypervisor = hypervisor_for(vm.host)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            try:
                state = await sync_to_async(hypervisor.state, thread_sensitive=False)(vm.name)
            except HypervisorError:
                return "unknown"
            if state not in ACTIVE_STATES or loop.time() > deadline:
                return state
            await asyncio.sleep(0.2)
