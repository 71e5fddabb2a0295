"""A small, fast asyncio client for the benchmark: raw TCP or WebSocket, same interface.

Written for the benchmark so the client costs little next to the proxies it measures: frames
are parsed with slicing and masked with one big-integer XOR.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket


class Conn(asyncio.Protocol):
    """A connection delivering payload bytes; `ws` decides whether they come framed."""

    def __init__(self, ws: bool) -> None:
        self.ws = ws
        self.handshaking = ws
        self.buffer = bytearray()
        self.inbox = bytearray()  # payload received and not yet taken
        self.received = 0  # payload bytes received in all
        self.waiter: asyncio.Future | None = None
        self.want = 0
        self.closed = asyncio.get_event_loop().create_future()
        self.handshake_done = asyncio.get_event_loop().create_future()
        self.discard = False  # load sessions: count, keep nothing

    def connection_made(self, transport):
        self.transport = transport
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data):
        if self.handshaking:
            self.buffer += data
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end])
            rest = bytes(self.buffer[end + 4 :])
            self.buffer.clear()
            self.handshaking = False
            if not head.startswith(b"HTTP/1.1 101"):
                self.handshake_done.set_exception(ConnectionError(head.split(b"\r\n")[0].decode()))
                return
            self.handshake_done.set_result(None)
            data = rest
            if not data:
                return
        if not self.ws:
            self._payload(data)
            return
        buf = self.buffer
        buf += data
        pos = 0
        n = len(buf)
        while n - pos >= 2:
            b1 = buf[pos + 1] & 0x7F
            header = 2
            if b1 == 126:
                if n - pos < 4:
                    break
                b1 = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                header = 4
            elif b1 == 127:
                if n - pos < 10:
                    break
                b1 = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                header = 10
            if n - pos < header + b1:
                break
            opcode = buf[pos] & 0x0F
            if opcode == 8:
                self.close_code = (
                    int.from_bytes(buf[pos + header : pos + header + 2], "big") if b1 >= 2 else 1005
                )
                self.transport.close()
            elif opcode in (0, 2):
                self._payload(buf[pos + header : pos + header + b1])
            elif opcode == 9 and self.ws:
                # Answer pings as browsers do: servers close sessions that never answer
                # (Daphne pings after 20 s of silence from the client and gives up 30 s later).
                self.transport.write(control(0xA, bytes(buf[pos + header : pos + header + b1])))
            pos += header + b1
        del buf[:pos]

    def _payload(self, data):
        self.received += len(data)
        if self.discard:
            return
        self.inbox += data
        if self.waiter is not None and len(self.inbox) >= self.want and not self.waiter.done():
            self.waiter.set_result(None)

    def connection_lost(self, exc):
        if self.ws and not self.handshake_done.done():
            self.handshake_done.set_exception(ConnectionError("closed during handshake"))
        if not self.closed.done():
            self.closed.set_result(None)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection closed"))

    async def read(self, count: int) -> bytes:
        """Exactly `count` payload bytes."""
        if len(self.inbox) < count:
            self.want = count
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter
            self.waiter = None
        data = bytes(self.inbox[:count])
        del self.inbox[:count]
        return data

    def send(self, payload: bytes) -> None:
        if not self.ws:
            self.transport.write(payload)
            return
        self.transport.write(frame(payload))

    def close(self) -> None:
        if self.ws and not self.transport.is_closing():
            self.transport.write(b"\x88\x82" + b"\x00\x00\x00\x00" + (1000).to_bytes(2, "big"))
        self.transport.close()


def control(opcode: int, payload: bytes) -> bytes:
    """A masked control frame (payload under 126 bytes), with an all-zero mask."""
    return bytes((0x80 | opcode, 0x80 | len(payload))) + bytes(4) + payload


def frame(payload: bytes) -> bytes:
    """A masked binary WebSocket frame."""
    n = len(payload)
    if n < 126:
        head = bytes((0x82, 0x80 | n))
    elif n < 65536:
        head = bytes((0x82, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x82, 0x80 | 127)) + n.to_bytes(8, "big")
    key = os.urandom(4)
    mask = (key * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(mask, "big")).to_bytes(n, "big") if n else b""
    return head + key + masked


async def open_conn(
    host: str, port: int, *, path: str | None = None, origin: str = "", cookie: str = ""
) -> Conn:
    """Raw TCP when `path` is None, else a WebSocket to ws://host:port<path>."""
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(lambda: Conn(ws=path is not None), host, port)
    if path is not None:
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: {host}:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            "Sec-WebSocket-Protocol: binary",
        ]
        if origin:
            lines.append(f"Origin: {origin}")
        if cookie:
            lines.append(f"Cookie: {cookie}")
        conn.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await conn.handshake_done
    return conn


class Flow:
    """Write-side flow control for a Conn: wait while its transport's buffer is full."""

    def __init__(self, conn: Conn) -> None:
        self.conn = conn

    async def drain(self, high: int = 1 << 20) -> None:
        transport = self.conn.transport
        while transport.get_write_buffer_size() > high:
            await asyncio.sleep(0.0005)
