"""The contracts of the console pipeline: what a front end gives the gate (`Client`), what a
console is (`Console`), what a protocol's client-side state machine is (`ClientSide`), and how a
protocol opens its console (`Opener`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

from console.errors import End

if TYPE_CHECKING:
    from console.models import ConsoleTicket
    from console.proxy.rfb import Step
    from console.recordings import Recorder


class Client(Protocol):
    """A front end's side of one connection: its transport, nothing else."""

    via: str  # ConsoleSession.Via
    address: str | None

    async def receive(self) -> bytes | None:
        """The client's next bytes; None once it is gone."""

    async def send(self, data: bytes) -> None:
        """Bytes to the client (waits while the client is not reading)."""

    async def opened(self) -> None:
        """The console is reached (the CONNECT proxy answers 200 now)."""

    async def end(self, end: End, reason: str) -> None:
        """Tell the client why the connection ends (or was refused), and close it."""

    def gone_reason(self) -> str:
        """Why the client went, once `receive` said it did (for the record)."""


class Console(Protocol):
    """The console side of one connection: a TCP link (console/proxy/relay.py), or a serial stream."""

    bytes_to_client: int
    bytes_from_client: int

    def write(self, data: bytes) -> None: ...
    async def drain(self) -> None: ...
    async def close(self) -> None: ...
    async def pump_to(self, send: Callable[[bytes], Awaitable[None]]) -> str: ...


class ClientSide(Protocol):
    """A protocol's state machine over what the client sends."""

    established: bool
    input_seen: bool  # the user pressed a key or used the mouse (the gate resets it)
    passthrough: bool  # established, and nothing left to follow: bytes pass as they are
    input_channel: bool  # in passthrough, every byte is the user's input

    def feed(self, data: bytes) -> Step:
        """Any of the client's bytes: what goes to the console, and what the proxy answers."""

    def relay(self, data: bytes) -> bytes:
        """Once established (the proxy answers nothing more): what goes to the console."""


class GateView(Protocol):
    """What an opener uses of the gate it opens a console for."""

    client: Client
    ticket: ConsoleTicket
    console: Console | None
    side: ClientSide | None
    ended: tuple[End, str] | None
    session_id: int | None
    password: str
    recorder: Recorder | None


class Opener:
    """How a protocol opens its console for a gate, and says why it closed."""

    def __init__(self, gate: GateView) -> None:
        self.gate = gate

    async def open(self) -> bytes:
        """Open the console (setting gate.console and gate.side), record the session
        (gate.record) and complete the handshakes: what the console sent meanwhile, for the
        client."""
        raise NotImplementedError

    async def why_ended(self, reason: str) -> tuple[End, str]:
        """The console closed by itself (`reason`: closed, or lost): why, for the client."""
        return End.CONSOLE_ENDED, "console connection lost" if "lost" in reason else End.CONSOLE_ENDED.reason
