"""The TCP side of a console connection, in plain asyncio: open it, pump it, close it."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

CONNECT_TIMEOUT = 5.0
READ_SIZE = 64 * 1024
# Above this much unsent data towards the VM, the reader waits for the socket to drain.
WRITE_HIGH_WATER = 256 * 1024


class ConsoleLink:
    """A TCP connection to a VM console, counting bytes each way."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.bytes_to_client = 0
        self.bytes_from_client = 0

    @classmethod
    async def open(cls, address: str, port: int) -> ConsoleLink:
        """Connect to the console; OSError (or TimeoutError) when it cannot be reached."""
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(address, port, limit=READ_SIZE), CONNECT_TIMEOUT
        )
        sock = writer.get_extra_info("socket")
        if sock is not None:
            # Console traffic is small interactive messages: never wait to coalesce them.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer)

    async def pump_to(self, send: Callable[[bytes], Awaitable[None]]) -> str:
        """Relay everything the console sends to `send` until it closes; returns why it ended."""
        read = self.reader.read
        try:
            while data := await read(READ_SIZE):
                self.bytes_to_client += len(data)
                await send(data)
        except (ConnectionError, OSError):
            return "console connection lost"
        return "console closed"

    async def write(self, data: bytes) -> None:
        """Relay bytes from the client to the console, waiting only when the VM falls behind."""
        self.bytes_from_client += len(data)
        self.writer.write(data)
        if self.writer.transport.get_write_buffer_size() > WRITE_HIGH_WATER:
            await self.writer.drain()

    async def close(self) -> None:
        self.writer.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), 1.0)
        except (OSError, asyncio.TimeoutError):
            pass
