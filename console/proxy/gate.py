"""One gate for every console path: admit, open the console, record, guard, relay, end.

The front ends (the portal's WebSockets, websockify, the SPICE CONNECT proxy) keep only their
transport: each hands the gate a `Client` (receive bytes, send bytes, say why it ended) and
how to admit its ticket. Everything else happens here, once:

1. **admit**: the ticket and the right behind it (console/tickets.py); a refusal is counted
   and logged once and told to the client in its transport's words (a close code, an HTTP
   status);
2. **open**: connect to the console (directly or through the host's SSH tunnel) and, for VNC
   and SPICE, authenticate to QEMU with the password only the portal knows, then answer the
   client's own handshake (console/proxy/rfb.py, spice.py); for the serial console, open
   libvirt's console stream (console/proxy/serial.py);
3. **record** the session, and **guard** it: its right is checked every few seconds (and at
   once on a notice) for as long as it stays open;
4. **relay**: what the client sends goes through its protocol's state machine (fail closed:
   a violation ends the connection and nothing after it passes), what the console sends goes
   to the client as it is;
5. **end**: the client is told why (the `End` vocabulary), the record gets its end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING

from channels.db import database_sync_to_async
from django.db import DatabaseError
from prometheus_client import Histogram

from console.control import console_inputs
from console.errors import End, Refused
from console.globalconfig import CLIPBOARD, config_value
from console.graphics import graphics_password_for_proxy, graphics_password_get
from console.hypervisor import HypervisorError
from console.livemigration import vm_moving_to
from console.metrics import CLIPBOARD_BLOCKED, FIRST_BYTE, REFUSALS
from console.models import ConsoleProtocol
from console.proxy.base import Client, ClientSide, Console, Opener
from console.proxy.guard import session_guard
from console.proxy.rfb import RfbClientSide, RfbPolicy, RfbServerAuth
from console.proxy.serial import SerialOpener
from console.proxy.spice import (
    SpiceClientSide,
    SpiceLinkReader,
    SpiceServerAuth,
    spice_channel_refusal,
)
from console.proxy.tunnels import console_connect
from console.proxy.wire import ClientGone, ConsoleRefusedProxy, Violation
from console.recordings import Recorder, recording_end, recording_policy, recording_start
from console.sessions import console_session_end, console_session_start

if TYPE_CHECKING:
    from console.models import ConsoleTicket
    from console.proxy.relay import ConsoleLink

logger = logging.getLogger(__name__)

HANDSHAKE_SECONDS = 30.0  # a client must have finished its handshake by then
SERVER_HANDSHAKE_SECONDS = 10.0
AUTH_ATTEMPTS = 3  # the password as read; again after a refusal (it may have just rotated); a fresh one
END_ATTEMPTS = 8  # about a minute of an unanswering database


@dataclass(frozen=True)
class Admitted:
    ticket: ConsoleTicket
    session_id: int
    password: str  # the VM's graphics password as the portal holds it ("": none valid yet)
    recorder: Recorder | None = None


def _admit_and_record(admit: Callable[[], ConsoleTicket], client: Client) -> Admitted:
    """Admit, read the console's password, record the session and start its recording: one
    trip to the database thread per connection (a SPICE page opens several at once, and under
    Daphne they queue for that thread: measured, four trips each cost its first frame tens of
    ms)."""
    ticket = admit()
    password = ""
    if ticket.protocol in (ConsoleProtocol.VNC, ConsoleProtocol.SPICE):
        held = graphics_password_get(vm_id=ticket.vm_id, domain_id=ticket.domain_id)
        password = held.password if held else ""
    session = console_session_start(ticket=ticket, via=client.via, client_address=client.address)
    recorder = None
    policy = recording_policy(ticket.vm)
    if policy.record:
        opened = recording_start(session=session, ticket=ticket, policy=policy)
        try:
            recorder = Recorder(opened)
        except OSError as exc:  # no recording, never no console; the index says why
            logger.warning("console session %s not recorded: %s", session.pk, exc)
            recording_end(recording_id=opened.recording_id, size=0, note=f"not recorded: {exc.strerror}")
    return Admitted(ticket, session.pk, password, recorder)


class RecordingClient:
    """A client whose every received byte also goes to its session's recording."""

    def __init__(self, client: Client, recorder: Recorder) -> None:
        self._client, self.recorder = client, recorder
        self.via, self.address = client.via, client.address

    def __getattr__(self, name: str) -> object:  # what a front end adds (the serial takeover)
        return getattr(self._client, name)

    async def receive(self) -> bytes | None:
        return await self._client.receive()

    async def send(self, data: bytes) -> None:
        await self._client.send(data)
        self.recorder.to_client(data)  # after: never on the way to the client

    async def opened(self) -> None:
        await self._client.opened()

    async def end(self, end: End, reason: str) -> None:
        await self._client.end(end, reason)

    def gone_reason(self) -> str:
        return self._client.gone_reason()


async def console_serve(client: Client, admit: Callable[[], ConsoleTicket]) -> None:
    """Serve one console connection of `client`, admitted by `admit` (blocking: run in a thread)."""
    try:
        admitted = await database_sync_to_async(_admit_and_record)(admit, client)
    except Refused as refused:
        REFUSALS.labels(refused.end.name.lower()).inc()
        logger.info("console refused for %s: %s", client.address or "?", refused.detail)
        await client.end(refused.end, refused.detail)
        return
    except DatabaseError as exc:
        # Consoles already open keep going without it; a new one cannot be admitted. The page
        # tries again by itself (the code reconnects).
        logger.warning(
            "console not admitted for %s: the database does not answer (%s)", client.address or "?", exc
        )
        await client.end(End.DATABASE_DOWN, End.DATABASE_DOWN.reason)
        return
    await Gate(client, admitted).run()


class Gate:
    """One admitted connection, from opening its console to recording its end."""

    def __init__(self, client: Client, admitted: Admitted) -> None:
        self.recorder = admitted.recorder
        self.client = client if self.recorder is None else RecordingClient(client, self.recorder)
        self.ticket = admitted.ticket
        self.password = admitted.password
        self.console: Console | None = None
        self.side: ClientSide | None = None
        self.session_id: int | None = admitted.session_id
        self.established = False
        self.end_reason = "client closed"
        self.ended: tuple[End, str] | None = None  # why the portal ended it (guard, violation)
        self.opener: Opener = _OPENERS[self.ticket.protocol](self)
        self._opening: asyncio.Future[bytes] | None = None
        self.console_ended = False  # the console side ended first (the pump decided why)

    async def run(self) -> None:
        session_guard().watch(
            admitted_id := self.session_id or 0,
            self.ticket.pk,
            self._right_gone,
            self._counters,
            established=lambda: self.established,
            on_input=self._input_changed,
        )
        try:
            early = await self._open()
            if early is None:
                return
            await self._relay(early)
        except asyncio.CancelledError:
            # The server is stopping (SIGTERM): tell the client, which reconnects through
            # another worker, and record the end before going.
            self.end_reason = End.WORKER_STOPPING.reason
            with contextlib.suppress(Exception):
                await self.client.end(End.WORKER_STOPPING, End.WORKER_STOPPING.reason)
            raise
        finally:
            session_guard().forget(admitted_id)
            await self._finish()

    # -- open ------------------------------------------------------------------------------

    async def _open(self) -> bytes | None:
        """Open the console and complete both handshakes: what the console already sent for
        the client, or None when it ended (the client was told why)."""
        self._opening = asyncio.ensure_future(asyncio.wait_for(self.opener.open(), HANDSHAKE_SECONDS))
        try:
            early = await self._opening
        except Refused as refused:
            await self._refuse(refused.end, refused.detail)
            return None
        except asyncio.TimeoutError:
            await self._refuse(End.PROTOCOL_VIOLATION, "the handshake did not complete in time")
            return None
        except ClientGone:
            self.end_reason = "client closed"
            return None
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if self.ended is None or (current is not None and current.cancelling()):
                raise  # the server is stopping
            early = None
        finally:
            self._opening = None
        if self.ended is not None:  # the guard ended it during the handshake
            await self._refuse(*self.ended)
            return None
        self.established = True  # recorded with the next heartbeat
        return early

    def _input_changed(self, allowed: bool) -> None:
        """Control of this VNC console was handed to or from its user (console.control)."""
        side = self.side
        if isinstance(side, RfbClientSide) and side.policy.watch_only == allowed:
            side.policy = replace(side.policy, watch_only=not allowed)
            change = "given" if allowed else "handed over"
            logger.info("console session %s: input %s", self.session_id, change)

    def _counters(self) -> tuple[int, int]:
        console = self.console
        return (console.bytes_to_client, console.bytes_from_client) if console else (0, 0)

    async def _refuse(self, end: End, detail: str) -> None:
        logger.info(
            "console of %s for %s ended before relaying: %s", self.ticket.vm, self.ticket.user, detail
        )
        self.end_reason = end.reason if end is not End.CONSOLE_ENDED else detail
        if self.console is not None:
            await self.console.close()
        with contextlib.suppress(Exception):
            await self.client.end(end, detail)

    # -- relay -----------------------------------------------------------------------------

    async def _relay(self, early: bytes) -> None:
        """Client bytes to the console here; console bytes to the client in a second task."""
        console, side, client = self.console, self.side, self.client
        assert console is not None and self.session_id is not None  # noqa: S101 - opened
        pump = asyncio.create_task(self._pump(console, early))
        receive, guard, session_id = client.receive, session_guard(), self.session_id
        recorder = self.recorder
        try:
            while (data := await receive()) is not None:
                if side is not None:
                    if side.passthrough:
                        if side.input_channel:
                            guard.input_seen(session_id)
                    else:
                        data = side.relay(data)
                        if side.input_seen:
                            side.input_seen = False
                            guard.input_seen(session_id)
                            if recorder is not None:
                                recorder_keys(recorder, side)
                        if not data:
                            continue
                elif recorder is not None and recorder.keystrokes:
                    recorder.input({"text": data.decode(errors="replace")})  # the serial console
                console.write(data)
                await console.drain()
            if not self.console_ended:
                self.end_reason = client.gone_reason()
        except Violation as violation:
            logger.warning(
                "ending the console of %s for %s: %s", self.ticket.vm, self.ticket.user, violation.detail
            )
            self.ended = (violation.end, violation.detail)
            await console.close()  # the pump then tells the client why
            await asyncio.gather(pump, return_exceptions=True)
            return
        finally:
            if not pump.done() and self.ended is None:
                pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)

    async def _pump(self, console: Console, early: bytes) -> None:
        client = self.client
        send = client.send
        opened = asyncio.get_running_loop().time()
        first_byte: Histogram | None = FIRST_BYTE.labels(self.ticket.protocol)

        async def to_client(data: bytes) -> None:
            nonlocal first_byte
            if first_byte is not None:
                first_byte.observe(asyncio.get_running_loop().time() - opened)
                first_byte = None
            await send(data)

        if early:
            await to_client(early)
        reason = await console.pump_to(to_client)
        self.console_ended = True
        if self.ended is not None:
            end, self.end_reason = self.ended[0], self.ended[0].reason
        elif (moving_to := await database_sync_to_async(vm_moving_to)(self.ticket.vm_id)) is not None:
            # Live migration: the source closed the console; the page reconnects to the new host.
            end, self.end_reason = End.VM_MOVED, f"the VM moved to {moving_to}"
        else:
            end, self.end_reason = await self.opener.why_ended(reason)
        with contextlib.suppress(Exception):
            await client.end(end, self.end_reason)

    async def _right_gone(self, end: End) -> None:
        """The guard found the user's right to this console gone: end it, saying why."""
        self.ended = (end, end.reason)
        if self._opening is not None:
            self._opening.cancel()  # still in its handshake
        if self.console is not None:
            await self.console.close()  # the pump then tells the client why

    # -- end -------------------------------------------------------------------------------

    async def _finish(self) -> None:
        side = self.side
        dropped = getattr(side, "clipboard_dropped_bytes", 0)
        if dropped:
            logger.info(
                "console session %s: kept %d bytes of the client's clipboard from the VM",
                self.session_id,
                dropped,
            )
            CLIPBOARD_BLOCKED.inc(dropped)
        console = self.console
        if console is not None:
            await console.close()
        recorder = self.recorder
        if recorder is not None:
            recorder.close()
            await _record_end(
                partial(
                    recording_end,
                    recording_id=recorder.opened.recording_id,
                    size=recorder.size,
                    note=recorder.note,
                    channel=recorder.channel,
                )
            )
        if self.session_id is not None:
            end = partial(
                console_session_end,
                session_id=self.session_id,
                bytes_to_client=console.bytes_to_client if console else 0,
                bytes_from_client=console.bytes_from_client if console else 0,
                reason=self.end_reason,
                established=self.established,
            )
            self.session_id = None
            await _record_end(end)


async def _record_end(end: Callable[[], None]) -> None:
    """Record a session's end; while the database does not answer, try again for a while (the
    process may outlive the outage; if not, the heartbeat sweep ends the record later)."""
    delay = 0.5
    for _ in range(END_ATTEMPTS):
        try:
            await database_sync_to_async(end)()
            return
        except DatabaseError:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 8.0)
    logger.warning("a console session's end could not be recorded: the database does not answer")


# -- what each protocol does to open its console ----------------------------------------------


class GraphicsOpener(Opener):
    """VNC and SPICE: a TCP connection to QEMU's console port, authenticated by the proxy."""

    async def _connect(self) -> ConsoleLink:
        ticket = self.gate.ticket
        try:
            link = await console_connect(ticket.ssh, ticket.address, ticket.port)
        except (OSError, asyncio.TimeoutError) as exc:
            logger.warning(
                "console of %s at %s:%s unreachable: %s", ticket.vm, ticket.address, ticket.port, exc
            )
            raise Refused(End.UNREACHABLE) from None
        self.gate.console = link
        return link

    async def _authenticated(
        self, link: ConsoleLink, machine_for: Callable[[str], RfbServerAuth | SpiceServerAuth]
    ) -> tuple[ConsoleLink, RfbServerAuth | SpiceServerAuth]:
        """`link`, authenticated to QEMU by the machine `machine_for(password)` makes; after a
        refused password (a rotation may have raced this connection) once more with the password
        the portal holds now, then with a fresh one. The client sees none of it."""
        ticket, refused, password = self.gate.ticket, "", self.gate.password
        for attempt in range(AUTH_ATTEMPTS):
            try:
                if attempt or not password:  # the one admission read, or none valid then
                    password = await database_sync_to_async(graphics_password_for_proxy)(
                        vm=ticket.vm,
                        domain_id=ticket.domain_id,
                        refused=refused,
                        force=attempt == AUTH_ATTEMPTS - 1,
                    )
            except (HypervisorError, ValueError) as exc:
                logger.warning("no graphics password for the console of %s: %s", ticket.vm, exc)
                raise Refused(
                    End.CONSOLE_REFUSED, "the portal could not set the console's password"
                ) from None
            if attempt:
                link = await self._connect()
            machine = machine_for(password)
            greeting = getattr(machine, "greeting", b"")
            try:
                if greeting:
                    link.write(greeting)
                await asyncio.wait_for(self._server_handshake(link, machine), SERVER_HANDSHAKE_SECONDS)
                # The session's bytes are the client's and the console's, not the proxy's own
                # handshake with QEMU: count from here (what QEMU sent past it included).
                link.bytes_from_client = 0
                link.bytes_to_client = len(machine.rest_peek())
                return link, machine
            except (ConsoleRefusedProxy, asyncio.TimeoutError, ConnectionError) as exc:
                await link.close()
                auth = isinstance(exc, ConsoleRefusedProxy) and exc.auth
                if self.gate.ended is not None:
                    raise Refused(*self.gate.ended) from None
                if not auth or attempt == AUTH_ATTEMPTS - 1:
                    logger.warning("console of %s refused the proxy: %s", ticket.vm, exc or "timed out")
                    raise Refused(
                        End.CONSOLE_REFUSED, str(exc) or "the console did not answer in time"
                    ) from None
                logger.info(
                    "console of %s refused its password (attempt %d); trying again", ticket.vm, attempt + 1
                )
                refused = password
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    async def _server_handshake(link: ConsoleLink, machine: RfbServerAuth | SpiceServerAuth) -> None:
        while not machine.done:
            data = await link.read()
            if not data:
                raise ConsoleRefusedProxy(
                    "the console closed the connection during the handshake", auth=False
                )
            reply = machine.feed(data)
            if reply:
                link.write(reply)

    async def _client_handshake(self, side: RfbClientSide | SpiceClientSide, pending: bytes = b"") -> None:
        gate, link = self.gate, self.gate.console
        assert link is not None  # noqa: S101
        data: bytes | None = pending
        while not side.established:
            if data:
                try:
                    step = side.feed(data)
                except Violation as violation:
                    if violation.reply:
                        await gate.client.send(violation.reply)
                    raise
                if step.to_client:
                    await gate.client.send(step.to_client)
                if step.to_server:
                    link.write(step.to_server)
                if side.established:
                    break
            data = await gate.client.receive()
            if data is None:
                raise ClientGone


def _vnc_policy(ticket: ConsoleTicket) -> tuple[str, bool]:
    """The clipboard's ways, and whether the client's keys and mouse reach the VM now."""
    return config_value(CLIPBOARD), console_inputs([ticket.pk]).get(ticket.pk, not ticket.view_only)


class VncOpener(GraphicsOpener):
    async def open(self) -> bytes:
        gate = self.gate
        link = await self._connect()
        await gate.client.opened()
        link, machine = await self._authenticated(link, RfbServerAuth)
        clipboard, has_input = await database_sync_to_async(_vnc_policy)(gate.ticket)
        side = RfbClientSide(RfbPolicy(watch_only=not has_input, clipboard=clipboard))
        gate.side = side
        if gate.recorder is not None:
            side.keys_pressed = []
        await gate.client.send(side.greeting)
        await self._client_handshake(side)
        return machine.rest()


class SpiceOpener(GraphicsOpener):
    async def open(self) -> bytes:
        gate, ticket = self.gate, self.gate.ticket
        link = await self._connect()
        await gate.client.opened()
        reader = SpiceLinkReader()
        while (spice_link := reader.link) is None:
            data = await gate.client.receive()
            if data is None:
                raise ClientGone
            reader.feed(data)
        if gate.recorder is not None:  # which channel this recording is (the player needs it)
            gate.recorder.channel = spice_link.channel_name
            gate.recorder.input({"spice_channel": spice_link.channel_name, "type": spice_link.channel_type})
        refusal = spice_channel_refusal(spice_link, watch_only=ticket.view_only)
        if refusal is not None:
            raise refusal
        link, machine = await self._authenticated(
            link, lambda password: SpiceServerAuth(spice_link, password)
        )
        assert isinstance(machine, SpiceServerAuth)  # noqa: S101 - what machine_for made
        side = SpiceClientSide(
            spice_link, machine, watch_only=ticket.view_only, client_secret_sha256=ticket.client_secret_hash
        )
        gate.side = side
        await gate.client.send(side.reply)
        await self._client_handshake(side, reader.rest())
        return machine.rest()


_OPENERS: dict[str, type[Opener]] = {
    ConsoleProtocol.VNC: VncOpener,
    ConsoleProtocol.SPICE: SpiceOpener,
    ConsoleProtocol.SERIAL: SerialOpener,
}


def recorder_keys(recorder: Recorder, side: ClientSide) -> None:
    """Keys the client pressed, as events: which ones only with console.recordKeystrokes."""
    for down, key in getattr(side, "keys_pressed", ()) or ():
        recorder.input({"key": "down" if down else "up", **({"keysym": key} if recorder.keystrokes else {})})
    side.keys_pressed = []  # type: ignore[attr-defined]
