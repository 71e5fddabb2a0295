"""VNC (RFB 3.8, RFC 6143) at the proxy: it authenticates to QEMU itself and answers the client.

Towards QEMU the proxy is the client: it takes RFB 3.8 and answers the VNC authentication
challenge with the password only the server knows (`RfbServerAuth`). Towards the client it is
the server (`RfbClientSide`): it offers RFB 3.8 (or 3.7 or 3.3, if the client asks for those)
with the security type None, so no graphics password ever reaches a browser. It follows the
client's stream from its first byte to its last, one state machine over the whole stream:

- the handshake from both sides, so it cannot lose step (an RFB 3.3 client sends no
  security-type byte; the proxy knows because it chose the version itself);
- ClientInit always goes to QEMU as "shared": no client can drop the others (QEMU's default
  share policy lets an exclusive client disconnect everyone else);
- then each client message by its type and length, against an allowlist for the client's
  role: a watcher's may not act on the VM, a user's clipboard follows `console.clipboard`.

Fail closed: a message type it does not know, or a length beyond its bounds, ends the
connection (`Violation`), and nothing after it passes. Bounded: it holds at most a message's
fixed part (or a SetEncodings list it rewrites); bodies are streamed through or dropped.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes

from console.proxy.wire import MAX_HELD, SERVER_HELD, Buffer, ConsoleRefusedProxy, Violation, u32

VERSION_38 = b"RFB 003.008\n"
CLIENT_VERSIONS = {b"RFB 003.003\n": 3, b"RFB 003.007\n": 7, b"RFB 003.008\n": 8}
SEC_NONE = 1
SEC_VNC_AUTH = 2

SET_PIXEL_FORMAT = 0
SET_ENCODINGS = 2
FRAMEBUFFER_UPDATE_REQUEST = 3
KEY_EVENT = 4
POINTER_EVENT = 5
CLIENT_CUT_TEXT = 6
ENABLE_CONTINUOUS_UPDATES = 150
CLIENT_FENCE = 248
XVP = 250
SET_DESKTOP_SIZE = 251
QEMU_MESSAGE = 255
QEMU_EXTENDED_KEY = 0
QEMU_AUDIO = 1

# Lengths of the fixed-size client messages.
_FIXED = {
    SET_PIXEL_FORMAT: 20,
    FRAMEBUFFER_UPDATE_REQUEST: 10,
    KEY_EVENT: 8,
    POINTER_EVENT: 6,
    ENABLE_CONTINUOUS_UPDATES: 10,
    XVP: 4,
}
# What can act on the VM: keys, the mouse, its clipboard, its screen size, its power (xvp),
# QEMU's own messages (extended keys, audio).
ACTS_ON_VM = frozenset({KEY_EVENT, POINTER_EVENT, CLIENT_CUT_TEXT, XVP, SET_DESKTOP_SIZE, QEMU_MESSAGE})
INPUT = frozenset({KEY_EVENT, POINTER_EVENT, QEMU_MESSAGE})

# QEMU refuses a ClientCutText above 1 MiB; so does the proxy (before any of it is read).
CUT_TEXT_MAX = 1 << 20
SET_ENCODINGS_MAX = 1024
EXTENDED_CLIPBOARD = -1063131698  # the pseudo-encoding 0xC0A1E5CE
# Extended clipboard actions (the top byte of a negative-length ClientCutText's flags).
CLIP_CAPS, CLIP_REQUEST, CLIP_PEEK, CLIP_NOTIFY, CLIP_PROVIDE = (1 << 24, 1 << 25, 1 << 26, 1 << 27, 1 << 28)
_CLIP_ACTIONS = CLIP_CAPS | CLIP_REQUEST | CLIP_PEEK | CLIP_NOTIFY | CLIP_PROVIDE


def vnc_des_response(password: str, challenge: bytes) -> bytes:
    """VNC authentication: the challenge encrypted with DES, keyed by the password (8 bytes,
    NUL-padded) with each key byte's bits in reverse order, as every VNC server expects."""
    key = password.encode("latin-1")[:8].ljust(8, b"\0")
    key = bytes(int(f"{byte:08b}"[::-1], 2) for byte in key)
    # One key thrice is DES; ECB over two blocks is what VNC authentication is (RFC 6143, 7.2.2).
    encryptor = Cipher(TripleDES(key * 3), modes.ECB()).encryptor()  # noqa: S305
    return encryptor.update(challenge) + encryptor.finalize()


class RfbServerAuth:
    """The proxy as QEMU's client, up to the end of authentication. Feed it what QEMU sends;
    each call returns what to send back. `done` once QEMU accepted; ConsoleRefusedProxy if it
    refused (`auth` True for the password)."""

    def __init__(self, password: str) -> None:
        self._password = password
        self._buffer = Buffer(SERVER_HELD)
        self._state = "version"
        self.done = False

    def feed(self, data: bytes) -> bytes:
        self._buffer.feed(data)
        out = b""
        while not self.done:
            step = getattr(self, f"_{self._state}")()
            if step is None:
                break
            out += step
        return out

    def _version(self) -> bytes | None:
        version = self._buffer.take(12)
        if version is None:
            return None
        if not version.startswith(b"RFB 003.") or version < VERSION_38:
            raise ConsoleRefusedProxy(f"the console speaks {version!r}, not RFB 3.8", auth=False)
        self._state = "security_types"
        return VERSION_38

    def _security_types(self) -> bytes | None:
        count = self._buffer.peek(1)
        if count is None or len(self._buffer) < 1 + count[0]:
            return None
        if count[0] == 0:
            self._state = "failure"
            self._buffer.take(1)
            return b""
        types = (self._buffer.take(1 + count[0]) or b"")[1:]  # all there: checked above
        if SEC_VNC_AUTH in types:
            self._state = "challenge"
            return bytes([SEC_VNC_AUTH])
        if SEC_NONE in types:  # a console without a password (a domain the portal did not start)
            self._state = "result"
            return bytes([SEC_NONE])
        raise ConsoleRefusedProxy(
            f"the console offers no security type the proxy speaks: {list(types)}", auth=False
        )

    def _challenge(self) -> bytes | None:
        challenge = self._buffer.take(16)
        if challenge is None:
            return None
        self._state = "result"
        return vnc_des_response(self._password, challenge)

    def _result(self) -> bytes | None:
        result = self._buffer.peek(4)
        if result is None:
            return None
        if result == b"\0\0\0\0":
            self._buffer.take(4)
            self.done = True
            return b""
        self._state = "auth_failure"
        self._buffer.take(4)
        return b""

    def _failure(self) -> bytes | None:
        return self._reason(auth=False)

    def _auth_failure(self) -> bytes | None:
        return self._reason(auth=True)

    def _reason(self, *, auth: bool) -> bytes | None:
        head = self._buffer.peek(4)
        if head is None:
            return None
        length = min(struct.unpack(">I", head)[0], 1024)
        text = self._buffer.take(4 + length)
        if text is None:
            return None
        raise ConsoleRefusedProxy(text[4:].decode("latin-1") or "refused", auth=auth)

    def rest_peek(self) -> bytes:
        return self._buffer.peek(len(self._buffer)) or b""

    def rest(self) -> bytes:
        """Anything QEMU sent after accepting (nothing, until it gets ClientInit)."""
        return self._buffer.rest()


@dataclass(frozen=True)
class RfbPolicy:
    """What one client may send: `watch_only` (nothing that acts on the VM), and its
    clipboard's ways (console.clipboard: both, to-vm, from-vm, off)."""

    watch_only: bool = False
    clipboard: str = "both"

    @property
    def clipboard_to_vm(self) -> bool:
        return not self.watch_only and self.clipboard in ("both", "to-vm")

    @property
    def clipboard_from_vm(self) -> bool:
        return not self.watch_only and self.clipboard in ("both", "from-vm")


@dataclass
class Step:
    """What one piece of the client's stream became."""

    to_server: bytes = b""
    to_client: bytes = b""


class RfbClientSide:
    """The proxy as the client's VNC server: `greeting` first, then feed it the client's bytes.

    `established` once ClientInit went to QEMU; from then on each message is passed, dropped
    (counted) or refused. `input_seen` turns True when the user pressed a key or used the
    mouse (the gate reads and resets it, for the idle limit)."""

    greeting = VERSION_38
    passthrough = False  # every message is followed
    input_channel = False

    def __init__(self, policy: RfbPolicy) -> None:
        self.policy = policy
        self.established = False
        self.input_seen = False
        # When a list (the session is recorded): (down, key symbol or scancode) of each key.
        self.keys_pressed: list[tuple[bool, int]] | None = None
        self.dropped_messages = 0
        self.clipboard_dropped_bytes = 0  # the client's clipboard kept from the VM (size only)
        self.clipboard_passed_bytes = 0
        self._buffer = Buffer()
        self._minor = 0
        self._state = "version"
        self._header = bytearray()
        self._body_left = 0
        self._body_pass = False

    # -- the handshake ---------------------------------------------------------------------

    def feed(self, data: bytes) -> Step:
        step = Step()
        if not self.established:
            self._buffer.feed(data)
            self._handshake(step)
            if not self.established:
                return step
            data = self._buffer.rest()
        if data:
            step.to_server += self.relay(data)
        return step

    def _handshake(self, step: Step) -> None:
        while not self.established:
            if self._state == "version":
                version = self._buffer.take(12)
                if version is None:
                    return
                if version not in CLIENT_VERSIONS:
                    raise Violation(f"RFB version {version!r} is not 3.3, 3.7 or 3.8")
                self._minor = CLIENT_VERSIONS[version]
                if self._minor == 3:  # the server decides: u32 security type, no reply
                    step.to_client += u32(SEC_NONE)
                    self._state = "client_init"
                else:
                    step.to_client += bytes([1, SEC_NONE])
                    self._state = "security_type"
            elif self._state == "security_type":
                chosen = self._buffer.take(1)
                if chosen is None:
                    return
                if chosen[0] != SEC_NONE:
                    raise Violation(f"security type {chosen[0]} was not offered")
                if self._minor == 8:  # 3.8 sends SecurityResult for None too; 3.7 does not
                    step.to_client += u32(0)
                self._state = "client_init"
            else:
                shared = self._buffer.take(1)
                if shared is None:
                    return
                step.to_server += b"\x01"  # always shared, whatever the client asked
                self.established = True

    # -- the messages ------------------------------------------------------------------------

    def relay(self, data: bytes) -> bytes:
        """Once established: what of `data` goes on to QEMU. One whole message that passes as
        it is (what a page sends: a frame a message) costs a look at its header only."""
        if not self._header and not self._body_left and data:
            kind, size = data[0], len(data)
            if kind in _FIXED:
                if size == _FIXED[kind] and not (self.policy.watch_only and kind in ACTS_ON_VM):
                    if kind in INPUT:
                        self.input_seen = True
                        if kind == KEY_EVENT and self.keys_pressed is not None:
                            self._key(data)
                    return data
            elif kind == CLIENT_CUT_TEXT and size >= 8 and self.policy.clipboard_to_vm:
                length = int.from_bytes(data[4:8], "big", signed=True)
                if 0 <= length <= CUT_TEXT_MAX and size == 8 + length:
                    self.clipboard_passed_bytes += length
                    return data
        return self._messages(data)

    def _messages(self, data: bytes) -> bytes:
        out = bytearray()
        view = memoryview(data)
        pos, end = 0, len(data)
        while pos < end:
            if self._body_left:
                n = min(self._body_left, end - pos)
                if self._body_pass:
                    out += view[pos : pos + n]
                self._body_left -= n
                pos += n
                continue
            need = self._header_length()
            take = min(need - len(self._header), end - pos)
            self._header += view[pos : pos + take]
            pos += take
            if len(self._header) < need:
                break
            if self._header_length() > len(self._header):
                continue  # its first bytes told how much more of it to read
            out += self._decide()
        return bytes(out)

    def _header_length(self) -> int:
        """How many bytes of the current message to hold before deciding on it."""
        header = self._header
        if not header:
            return 1
        kind = header[0]
        if kind in _FIXED:
            return _FIXED[kind]
        if kind == SET_ENCODINGS:
            if len(header) < 4:
                return 4
            count = struct.unpack_from(">H", header, 2)[0]
            if count > SET_ENCODINGS_MAX:
                raise Violation(f"SetEncodings with {count} encodings")
            return 4 + 4 * count
        if kind == CLIENT_CUT_TEXT:
            if len(header) < 8:
                return 8
            length = struct.unpack_from(">i", header, 4)[0]
            return 12 if length < 0 else 8
        if kind == CLIENT_FENCE:
            return 9
        if kind == SET_DESKTOP_SIZE:
            return 8
        if kind == QEMU_MESSAGE:
            if len(header) < 2:
                return 2
            if header[1] == QEMU_EXTENDED_KEY:
                return 12
            if header[1] == QEMU_AUDIO:
                if len(header) < 4:
                    return 4
                return 10 if struct.unpack_from(">H", header, 2)[0] == 2 else 4
            raise Violation(f"QEMU client message subtype {header[1]}")
        raise Violation(f"client message type {kind}")

    def _decide(self) -> bytes:
        """The current message's fixed part is here: pass it (and stream its body), or drop it."""
        header = bytes(self._header)
        self._header.clear()
        kind = header[0]
        body = 0
        if kind == CLIENT_CUT_TEXT:
            return self._cut_text(header)
        if kind == CLIENT_FENCE:
            body = header[8]
            if body > 64:
                raise Violation("ClientFence longer than 64 bytes")
        elif kind == SET_DESKTOP_SIZE:
            body = 16 * header[6]
        elif kind == SET_ENCODINGS and self.policy.watch_only:
            header = self._without_clipboard_encoding(header)
        if kind in ACTS_ON_VM and self.policy.watch_only:
            self.dropped_messages += 1
            self._stream_body(body, passed=False)
            return b""
        if kind in INPUT:
            self.input_seen = True
            if self.keys_pressed is not None:
                self._key(header)
        self._stream_body(body, passed=True)
        return header

    def _key(self, message: bytes) -> None:
        if message[0] == KEY_EVENT:
            self.keys_pressed.append((bool(message[1]), struct.unpack_from(">I", message, 4)[0]))  # type: ignore[union-attr]
        elif message[0] == QEMU_MESSAGE and message[1] == QEMU_EXTENDED_KEY:
            down, keysym = struct.unpack_from(">HI", message, 2)
            self.keys_pressed.append((bool(down), keysym))  # type: ignore[union-attr]

    def _stream_body(self, length: int, *, passed: bool) -> None:
        self._body_left, self._body_pass = length, passed

    def _cut_text(self, header: bytes) -> bytes:
        length = struct.unpack_from(">i", header, 4)[0]
        size = abs(length)
        if size > CUT_TEXT_MAX:
            raise Violation(f"ClientCutText of {size} bytes (at most {CUT_TEXT_MAX})")
        if length >= 0:  # classic: text for the VM's clipboard
            allowed = self.policy.clipboard_to_vm
            body, counted = size, size
        else:  # extended clipboard: flags first, then the action's data
            if size < 4:
                raise Violation("extended clipboard message without its flags")
            flags = struct.unpack_from(">I", header, 8)[0]
            allowed = self._clipboard_action_allowed(flags)
            provides = flags & CLIP_PROVIDE and not flags & CLIP_CAPS  # data, not capabilities
            body, counted = size - 4, size - 4 if provides else 0
        if allowed:
            self.clipboard_passed_bytes += counted
        else:
            self.dropped_messages += 1
            self.clipboard_dropped_bytes += counted
        self._stream_body(body, passed=allowed)
        return header if allowed else b""

    def _clipboard_action_allowed(self, flags: int) -> bool:
        if flags & CLIP_CAPS:  # what the client can do (its action bits list what it supports)
            return not self.policy.watch_only and (
                self.policy.clipboard_to_vm or self.policy.clipboard_from_vm
            )
        actions = flags & _CLIP_ACTIONS
        if actions & (actions - 1):
            raise Violation("an extended clipboard message with more than one action")
        if self.policy.watch_only:
            return False
        if actions in (CLIP_REQUEST, CLIP_PEEK):  # asks for the VM's clipboard
            return self.policy.clipboard_from_vm
        if actions in (CLIP_NOTIFY, CLIP_PROVIDE):  # offers or sends the client's
            return self.policy.clipboard_to_vm
        raise Violation(f"extended clipboard flags {flags:#x}")

    @staticmethod
    def _without_clipboard_encoding(header: bytes) -> bytes:
        """A watcher's SetEncodings without the extended clipboard: QEMU then never sends it the
        VM's clipboard."""
        count = struct.unpack_from(">H", header, 2)[0]
        encodings = [e for e in struct.unpack_from(f">{count}i", header, 4) if e != EXTENDED_CLIPBOARD]
        return struct.pack(f">BxH{len(encodings)}i", SET_ENCODINGS, len(encodings), *encodings)


assert 4 + 4 * SET_ENCODINGS_MAX <= MAX_HELD  # noqa: S101 - the bound holds a whole SetEncodings
