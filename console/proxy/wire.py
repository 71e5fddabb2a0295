"""What the protocol state machines share: a bounded receive buffer and the one exception a
client's protocol error raises (the connection then ends: fail closed)."""

from __future__ import annotations

import struct

from console.errors import End, Refused

# No state machine holds more than this of one client's bytes: a message's fixed part, a
# handshake's, or a message it must see whole to rewrite. Bodies are streamed, never held.
MAX_HELD = 8 * 1024
# What the console (QEMU) may send in one go while the proxy completes its own handshake with
# it: the SPICE main channel starts talking as soon as the link is accepted. QEMU is the
# portal's own; the bound is against a misconfigured endpoint, not a hostile one.
SERVER_HELD = 4 * 128 * 1024


class Violation(Refused):
    """The client broke the protocol or asked for what its role does not allow."""

    def __init__(self, detail: str, end: End = End.PROTOCOL_VIOLATION, *, reply: bytes = b"") -> None:
        super().__init__(end, detail)
        self.reply = reply  # what the protocol tells its client before the connection ends


class ConsoleRefusedProxy(Exception):
    """The console (QEMU) refused the proxy: `auth` is True when it refused the password."""

    def __init__(self, detail: str, *, auth: bool) -> None:
        super().__init__(detail)
        self.auth = auth


class Buffer:
    """Bytes received and not yet consumed, at most `limit` of them."""

    def __init__(self, limit: int = MAX_HELD) -> None:
        self._data = bytearray()
        self._limit = limit

    def __len__(self) -> int:
        return len(self._data)

    def feed(self, data: bytes) -> None:
        if len(self._data) + len(data) > self._limit:
            raise Violation(f"more than {self._limit} bytes without a complete message")
        self._data += data

    def peek(self, n: int) -> bytes | None:
        return bytes(self._data[:n]) if len(self._data) >= n else None

    def take(self, n: int) -> bytes | None:
        """The next `n` bytes, consumed, or None until they have all come."""
        if len(self._data) < n:
            return None
        out = bytes(self._data[:n])
        del self._data[:n]
        return out

    def take_up_to(self, n: int) -> bytes:
        out = bytes(self._data[:n])
        del self._data[:n]
        return out

    def rest(self) -> bytes:
        out = bytes(self._data)
        self._data.clear()
        return out


def u32(value: int) -> bytes:
    return struct.pack(">I", value)


def le32(value: int) -> bytes:
    return struct.pack("<I", value)


class ClientGone(Exception):
    """The client left before its handshake completed (a page closing a socket it opened
    early and never used, a reload): no protocol was broken."""
