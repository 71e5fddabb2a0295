"""The TCP side of a console connection, in plain asyncio: open it, read it, write to it, close it.

A small buffered Protocol rather than asyncio streams. Reads land in one buffer that the relay
empties in one piece; reading pauses only while it is full, so at most its size comes in per
event-loop turn. The buffer grows while the console fills it (a screen update) and shrinks
back when it goes quiet, so an idle session holds 16 KiB, not 128. The relay gets no signal
when the WebSocket side falls behind (Daphne's `send` never waits), so reading in bounded
steps is what keeps Twisted's write buffer from growing without end (see README,
Performance). Writes made in one event-loop turn leave in one system call.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Protocol, cast

CONNECT_TIMEOUT = 5.0
MIN_READ_SIZE = 16 * 1024
READ_SIZE = 128 * 1024  # measured best of 64, 128, 256 and 512 KiB on both servers
# Above this much unsent data towards the console, the relay waits for the socket to drain.
WRITE_HIGH_WATER = 1 << 20


class LinkTransport(Protocol):
    """What a link uses of its transport: asyncio's TCP transport, or an SSH channel."""

    def write(self, data: bytes) -> None: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def is_closing(self) -> bool: ...
    def close(self) -> None: ...


class ConsoleLink(asyncio.BufferedProtocol):
    """A TCP connection to a VM console, counting bytes each way."""

    transport: LinkTransport  # set by connection_made, before anything else runs

    def __init__(self) -> None:
        self.bytes_to_client = 0
        self.bytes_from_client = 0
        self._buffer = memoryview(bytearray(MIN_READ_SIZE))
        self._filled = 0
        self._paused = False
        self._eof = False
        self._lost: Exception | None = None
        self._reader: asyncio.Future | None = None
        self._outbox: list[bytes] = []
        self._drained: asyncio.Future | None = None
        self._write_paused = False

    @classmethod
    async def open(cls, address: str, port: int) -> ConsoleLink:
        """Connect to the console; OSError (or TimeoutError) when it cannot be reached."""
        loop = asyncio.get_running_loop()
        _, link = await asyncio.wait_for(loop.create_connection(cls, address, port), CONNECT_TIMEOUT)
        return link

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # a TCP connection's
        self.transport = transport
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Console traffic is small interactive messages: never wait to coalesce them.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buffer[self._filled :]

    def buffer_updated(self, nbytes: int) -> None:
        self._filled += nbytes
        if self._filled == len(self._buffer):
            self._paused = True
            self.transport.pause_reading()  # until read() empties the buffer
        self._wake_reader()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake_reader()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self._lost = exc
        self._wake_reader()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def _wake_reader(self) -> None:
        if self._reader is not None and not self._reader.done():
            self._reader.set_result(None)

    # -- for the proxies -------------------------------------------------------------------

    async def _data_or_eof(self) -> bool:
        """Wait until something was received (True) or the console closed (False)."""
        while not self._received():
            if self._eof:
                if self._lost is not None:
                    raise ConnectionError(str(self._lost))
                return False
            self._reader = asyncio.get_running_loop().create_future()
            await self._reader
            self._reader = None
        return True

    def _received(self) -> int:
        return self._filled

    async def read(self) -> bytes:
        """The next chunk the console sent (at most READ_SIZE); b"" once it closed."""
        if not self._filled and not await self._data_or_eof():
            return b""
        size = len(self._buffer)
        data = bytes(self._buffer[: self._filled])
        if self._filled == size and size < READ_SIZE:
            self._buffer = memoryview(bytearray(min(size * 4, READ_SIZE)))
        elif self._filled <= MIN_READ_SIZE // 2 and size > MIN_READ_SIZE:
            self._buffer = memoryview(bytearray(MIN_READ_SIZE))
        self._filled = 0
        if self._paused and not self._eof:
            self._paused = False
            self.transport.resume_reading()
        self.bytes_to_client += len(data)
        return data

    def write(self, data: bytes) -> None:
        """Send bytes to the console: the first of a loop turn at once (a keystroke should not
        wait), the rest of that turn gathered into one send."""
        self.bytes_from_client += len(data)
        if self._outbox:
            self._outbox.append(data)
            return
        self.transport.write(data)
        self._outbox.append(b"")
        asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        outbox, self._outbox = self._outbox, []
        if len(outbox) > 1 and not self.transport.is_closing():
            self.transport.write(b"".join(outbox))

    async def drain(self) -> None:
        """Wait while the console is not taking what we send it."""
        if self._write_paused and not self.transport.is_closing():
            self._drained = asyncio.get_running_loop().create_future()
            await self._drained

    async def pump_to(self, send: Callable[[bytes], Awaitable[None]]) -> str:
        """Relay everything the console sends to `send` until it closes; returns why it ended."""
        try:
            while data := await self.read():
                await send(data)
        except (ConnectionError, OSError):
            return "console connection lost"
        return "console closed"

    async def close(self) -> None:
        self._flush()
        self.transport.close()
