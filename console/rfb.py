"""Just enough of the RFB (VNC) protocol, client to server, to drop some of the client's messages.

The proxy follows the client's side of the stream — the handshake, then each message by its
type and length — and removes ClientCutText messages when the clipboard policy does not let
the client's clipboard into the VM, and the keyboard, mouse and clipboard of a view-only
client. Everything else passes byte for byte. A message it does not
know ends the filtering safely: the rest of the connection is refused rather than guessed at.
"""

from __future__ import annotations

import struct

KEY_EVENT = 4
POINTER_EVENT = 5
CLIENT_CUT_TEXT = 6
QEMU_MESSAGE = 255  # QEMU's client messages: subtype 0 is the extended key event (12 bytes)
VIEW_ONLY_DROPS = frozenset({KEY_EVENT, POINTER_EVENT, CLIENT_CUT_TEXT, QEMU_MESSAGE})
# Fixed-size client messages, by type: SetPixelFormat, FramebufferUpdateRequest, KeyEvent,
# PointerEvent, EnableContinuousUpdates, xvp.
_FIXED = {0: 20, 3: 10, 4: 8, 5: 6, 150: 10, 250: 4}
_SET_ENCODINGS = 2
_CLIENT_FENCE = 248
_SET_DESKTOP_SIZE = 251
# Handshake, client side: ProtocolVersion (12), the security type chosen (1), the VNC
# authentication response (16, only for type 2), ClientInit (1).
_VNC_AUTH = 2


class RfbProtocolError(Exception):
    """The client sent something this filter does not know how to step over."""


class RfbClientFilter:
    """Feed it the client's bytes as they come; it returns what may go on to the VM: every
    message but those of the types in `drop` (by default, the client's clipboard)."""

    def __init__(self, drop: frozenset[int] = frozenset({CLIENT_CUT_TEXT})) -> None:
        self.drop = drop
        self._buffer = bytearray()
        self._handshake = [12, 1]  # lengths still to pass; the security type decides the rest
        self._security_type_seen = False
        self.dropped_bytes = 0  # clipboard text kept from the VM (for the audit: size only)
        self.dropped_messages = 0
        self.passed_bytes = 0  # clipboard text let through to the VM (size only)
        self.passed_messages = 0

    def feed(self, data: bytes) -> bytes:
        self._buffer += data
        out = bytearray()
        while True:
            length = self._next_length()
            if length is None or len(self._buffer) < length:
                return bytes(out)
            message = bytes(self._buffer[:length])
            del self._buffer[:length]
            if self._handshake:
                self._handshake_step(message)
                out += message
            elif message[0] in self.drop:
                if message[0] == CLIENT_CUT_TEXT:
                    self.dropped_messages += 1
                    self.dropped_bytes += length - 8
            else:
                if message[0] == CLIENT_CUT_TEXT:
                    self.passed_messages += 1
                    self.passed_bytes += length - 8
                out += message

    def _handshake_step(self, message: bytes) -> None:
        self._handshake.pop(0)
        if len(message) == 1 and not self._security_type_seen and not self._handshake:
            self._security_type_seen = True
            self._handshake = [16, 1] if message[0] == _VNC_AUTH else [1]

    def _next_length(self) -> int | None:
        """The length of the next whole message, or None until enough of it has come."""
        if self._handshake:
            return self._handshake[0]
        buffer = self._buffer
        if not buffer:
            return None
        kind = buffer[0]
        if kind in _FIXED:
            return _FIXED[kind]
        if kind == QEMU_MESSAGE:
            if len(buffer) < 2:
                return None
            if buffer[1] == 0:
                return 12
            raise RfbProtocolError(f"QEMU client message subtype {buffer[1]}")
        if kind == _SET_ENCODINGS:
            return None if len(buffer) < 4 else 4 + 4 * struct.unpack_from(">H", buffer, 2)[0]
        if kind == CLIENT_CUT_TEXT:
            if len(buffer) < 8:
                return None
            # A negative length is the extended clipboard's (its payload is abs(length) bytes).
            return 8 + abs(struct.unpack_from(">i", buffer, 4)[0])
        if kind == _CLIENT_FENCE:
            return None if len(buffer) < 9 else 9 + buffer[8]
        if kind == _SET_DESKTOP_SIZE:
            return None if len(buffer) < 8 else 8 + 16 * buffer[6]
        raise RfbProtocolError(f"client message type {kind}")
