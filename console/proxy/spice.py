"""SPICE at the proxy: it links each channel to QEMU itself and answers the client's link.

A SPICE client opens one connection per channel and starts each with a link message (the
channel's type, its capabilities). The proxy reads it as a stream (`SpiceLinkReader`: it may
come in any number of pieces), refuses channels the client's role may not have, then links
the channel to QEMU with the client's capabilities and authenticates with the password only
the server knows, encrypted with QEMU's RSA key (`SpiceServerAuth`). It answers the client
itself (`SpiceClientSide`) with QEMU's capabilities and a public key of its own: the client's
encrypted "password" is decrypted only where it is a .vv file's one-time secret (the SPICE
proxy checks it), and ignored where the portal's WebSocket already admitted the connection.
No graphics password reaches a client.

After the link, a watcher's messages are followed one by one against an allowlist per
channel (only main, display, cursor and playback, never what acts on the VM: the agent's
clipboard, monitors and file transfer, the mouse mode); unknown types end the connection
(fail closed), bodies are streamed with a bound. A user's channels pass untouched.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass, field
from functools import cache

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from console.errors import End
from console.proxy.rfb import Step
from console.proxy.wire import SERVER_HELD, Buffer, ConsoleRefusedProxy, Violation, le32

MAGIC = b"REDQ"
VERSION_MAJOR, VERSION_MINOR = 2, 2
HEADER = struct.Struct("<4sIII")  # magic, major, minor, size
LINK_MESS = struct.Struct("<IBBIII")  # connection id, channel type, channel id, caps counts, offset
LINK_REPLY_FIXED = 4 + 162 + 12  # error, RSA-1024 public key (DER), caps counts, offset
LINK_MAX = 4096
CAPS_MAX = 64  # words of capabilities per kind
PUBKEY_BYTES = 162
TICKET_BYTES = 128

CAP_AUTH_SELECTION, CAP_AUTH_SPICE, CAP_AUTH_SASL, CAP_MINI_HEADER = 0, 1, 2, 3
AUTH_SPICE = 1  # SpiceLinkAuthMechanism for SPICE's own ticket
LINK_OK, LINK_PERMISSION_DENIED = 0, 7

MAIN, DISPLAY, INPUTS, CURSOR, PLAYBACK = 1, 2, 3, 4, 5
CHANNEL_NAMES = {
    1: "main",
    2: "display",
    3: "inputs",
    4: "cursor",
    5: "playback",
    6: "record",
    7: "tunnel",
    8: "smartcard",
    9: "usbredir",
    10: "port",
    11: "webdav",
}
WATCH_CHANNELS = frozenset({MAIN, DISPLAY, CURSOR, PLAYBACK})

# Client messages a watcher's channels may send (spice-protocol's enums.h).
ACK_SYNC, ACK, PONG, DISCONNECTING = 1, 2, 3, 6
MAIN_ATTACH_CHANNELS, MAIN_MOUSE_MODE_REQUEST = 104, 105
MAIN_AGENT_START, MAIN_AGENT_DATA, MAIN_AGENT_TOKEN = 106, 107, 108
DISPLAY_INIT, DISPLAY_LAST = 101, 105  # init, stream report, compression, GL done, codec
_COMMON = frozenset({ACK_SYNC, ACK, PONG, DISCONNECTING})
WATCH_ALLOWED = {
    MAIN: _COMMON | {MAIN_ATTACH_CHANNELS},
    DISPLAY: _COMMON | set(range(DISPLAY_INIT, DISPLAY_LAST + 1)),
    CURSOR: _COMMON,
    PLAYBACK: _COMMON,
}
# Known, and acting on the VM: dropped for a watcher (the agent: clipboard, monitors config,
# file transfer; the mouse mode).
WATCH_DROPPED = {
    MAIN: frozenset({MAIN_MOUSE_MODE_REQUEST, MAIN_AGENT_START, MAIN_AGENT_DATA, MAIN_AGENT_TOKEN})
}
WATCH_BODY_MAX = 64 * 1024
MINI_HEADER = struct.Struct("<HI")  # type, size
FULL_HEADER = struct.Struct("<QHII")  # serial, type, size, sub-message list


@cache
def proxy_key() -> rsa.RSAPrivateKey:
    """This process's key for the clients' link: SPICE fixes it at RSA-1024 (7 ms to make)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - the protocol's size


@cache
def proxy_public_key() -> bytes:
    der = (
        proxy_key()
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    assert len(der) == PUBKEY_BYTES  # noqa: S101 - RSA-1024's SubjectPublicKeyInfo
    return der


_OAEP = padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)  # noqa: S303 - SPICE's


def _caps_have(caps: list[int], bit: int) -> bool:
    return len(caps) > bit // 32 and bool(caps[bit // 32] & (1 << (bit % 32)))


def _caps_without(caps: list[int], bit: int) -> list[int]:
    out = list(caps)
    if len(out) > bit // 32:
        out[bit // 32] &= ~(1 << (bit % 32))
    return out


def _caps_bytes(caps: list[int]) -> bytes:
    return b"".join(le32(c) for c in caps)


@dataclass(frozen=True)
class SpiceLink:
    """A client's link message: which channel, and what it can do."""

    connection_id: int
    channel_type: int
    channel_id: int
    common_caps: list[int] = field(default_factory=list)
    channel_caps: list[int] = field(default_factory=list)

    @property
    def channel_name(self) -> str:
        return CHANNEL_NAMES.get(self.channel_type, f"channel {self.channel_type}")

    def to_bytes(self) -> bytes:
        """The link message as QEMU gets it: the client's, but never offering SASL (the proxy
        authenticates with SPICE's ticket)."""
        common = _caps_without(self.common_caps, CAP_AUTH_SASL)
        body = (
            LINK_MESS.pack(
                self.connection_id,
                self.channel_type,
                self.channel_id,
                len(common),
                len(self.channel_caps),
                LINK_MESS.size,
            )
            + _caps_bytes(common)
            + _caps_bytes(self.channel_caps)
        )
        return HEADER.pack(MAGIC, VERSION_MAJOR, VERSION_MINOR, len(body)) + body


def _read_caps(data: bytes, offset: int, common: int, channel: int) -> tuple[list[int], list[int]]:
    if common > CAPS_MAX or channel > CAPS_MAX or offset + 4 * (common + channel) > len(data):
        raise Violation("SPICE capabilities out of bounds")
    words = list(struct.unpack_from(f"<{common + channel}I", data, offset))
    return words[:common], words[common:]


class SpiceLinkReader:
    """Reads a client's link message from its stream, in however many pieces it comes."""

    def __init__(self) -> None:
        self._buffer = Buffer(LINK_MAX + HEADER.size)
        self.link: SpiceLink | None = None

    def feed(self, data: bytes) -> SpiceLink | None:
        self._buffer.feed(data)
        head = self._buffer.peek(HEADER.size)
        if head is None:
            return None
        magic, major, _minor, size = HEADER.unpack(head)
        if magic != MAGIC:
            raise Violation("not a SPICE link message")
        if major != VERSION_MAJOR:
            raise Violation(f"SPICE protocol {major}, not {VERSION_MAJOR}")
        if not LINK_MESS.size <= size <= LINK_MAX:
            raise Violation(f"a SPICE link message of {size} bytes")
        whole = self._buffer.take(HEADER.size + size)
        if whole is None:
            return None
        body = whole[HEADER.size :]
        connection_id, channel_type, channel_id, common, channel, offset = LINK_MESS.unpack_from(body)
        common_caps, channel_caps = _read_caps(body, offset, common, channel)
        self.link = SpiceLink(connection_id, channel_type, channel_id, common_caps, channel_caps)
        return self.link

    def rest(self) -> bytes:
        return self._buffer.rest()


class SpiceServerAuth:
    """Links one channel to QEMU and authenticates: send `greeting`, then feed it what QEMU
    answers; each call returns what to send next. `done` once QEMU accepted."""

    def __init__(self, link: SpiceLink, password: str) -> None:
        self.link = link
        self.greeting = link.to_bytes()
        self._password = password
        self._buffer = Buffer(SERVER_HELD)
        self._state = "reply"
        self.done = False
        self.common_caps: list[int] = []
        self.channel_caps: list[int] = []

    def feed(self, data: bytes) -> bytes:
        self._buffer.feed(data)
        if self._state == "reply":
            return self._reply()
        if self._state == "result":
            self._result()
        return b""

    def _reply(self) -> bytes:
        head = self._buffer.peek(HEADER.size)
        if head is None:
            return b""
        magic, _major, _minor, size = HEADER.unpack(head)
        if magic != MAGIC or not LINK_REPLY_FIXED <= size <= LINK_MAX:
            raise ConsoleRefusedProxy("the console's SPICE link reply is malformed", auth=False)
        whole = self._buffer.take(HEADER.size + size)
        if whole is None:
            return b""
        body = whole[HEADER.size :]
        error = struct.unpack_from("<I", body)[0]
        if error != LINK_OK:
            raise ConsoleRefusedProxy(
                f"the console refused the {self.link.channel_name} channel (link error {error})", auth=False
            )
        public_key = serialization.load_der_public_key(body[4 : 4 + PUBKEY_BYTES])
        if not isinstance(public_key, rsa.RSAPublicKey):
            raise ConsoleRefusedProxy("the console's SPICE key is not RSA", auth=False)
        common, channel, offset = struct.unpack_from("<III", body, 4 + PUBKEY_BYTES)
        try:
            self.common_caps, self.channel_caps = _read_caps(body, offset, common, channel)
        except Violation:
            raise ConsoleRefusedProxy("the console's SPICE capabilities are malformed", auth=False) from None
        out = b""
        if _caps_have(self.common_caps, CAP_AUTH_SELECTION) and _caps_have(
            self.link.common_caps, CAP_AUTH_SELECTION
        ):
            out += le32(AUTH_SPICE)
        out += public_key.encrypt(self._password.encode() + b"\0", _OAEP)
        self._state = "result"
        return out + (self._result() or b"")

    def _result(self) -> bytes:
        result = self._buffer.take(4)
        if result is None:
            return b""
        code = struct.unpack("<I", result)[0]
        if code == LINK_PERMISSION_DENIED:
            raise ConsoleRefusedProxy("the console refused the password", auth=True)
        if code != LINK_OK:
            raise ConsoleRefusedProxy(f"the console refused the link (error {code})", auth=False)
        self.done = True
        return b""

    def rest_peek(self) -> bytes:
        return self._buffer.peek(len(self._buffer)) or b""

    def rest(self) -> bytes:
        """What QEMU sent after accepting (the main channel starts at once): for the client,
        once its own link is answered."""
        return self._buffer.rest()


class SpiceClientSide:
    """The proxy as the client's SPICE server for one channel: `reply` answers its link; then
    feed it the client's bytes. `client_secret_sha256`, when given, is the digest of the
    one-time secret the client must send as its ticket (a .vv file's)."""

    def __init__(
        self,
        link: SpiceLink,
        server: SpiceServerAuth,
        *,
        watch_only: bool,
        client_secret_sha256: str = "",
    ) -> None:
        self.link = link
        self.watch_only = watch_only
        self._secret = client_secret_sha256
        common = _caps_without(server.common_caps, CAP_AUTH_SASL)
        body = (
            le32(LINK_OK)
            + proxy_public_key()
            + struct.pack("<III", len(common), len(server.channel_caps), LINK_REPLY_FIXED)
            + _caps_bytes(common)
            + _caps_bytes(server.channel_caps)
        )
        self.reply = HEADER.pack(MAGIC, VERSION_MAJOR, VERSION_MINOR, len(body)) + body
        self._expects_mechanism = _caps_have(link.common_caps, CAP_AUTH_SELECTION) and _caps_have(
            common, CAP_AUTH_SELECTION
        )
        mini = _caps_have(link.common_caps, CAP_MINI_HEADER) and _caps_have(common, CAP_MINI_HEADER)
        self._header_format = MINI_HEADER if mini else FULL_HEADER
        self._buffer = Buffer()
        self.established = False
        self.input_seen = False
        self.dropped_messages = 0
        self._header = bytearray()
        self._body_left = 0
        self._body_pass = False
        # A user's channels pass untouched once linked; a watcher's are followed message by message.
        self.passthrough = False
        self._passthrough_after_link = not watch_only
        self.input_channel = link.channel_type == INPUTS

    def feed(self, data: bytes) -> Step:
        step = Step()
        if not self.established:
            self._buffer.feed(data)
            if not self._authenticate(step):
                return step
            data = self._buffer.rest()
        if data:
            step.to_server += self.relay(data)
        return step

    def _authenticate(self, step: Step) -> bool:
        need = TICKET_BYTES + (4 if self._expects_mechanism else 0)
        ticket = self._buffer.take(need)
        if ticket is None:
            return False
        if self._expects_mechanism:
            mechanism = struct.unpack_from("<I", ticket)[0]
            if mechanism != AUTH_SPICE:
                raise Violation(f"SPICE authentication mechanism {mechanism} was not offered")
            ticket = ticket[4:]
        if self._secret and not self._secret_matches(ticket):
            raise Violation(
                "the .vv file's one-time password is wrong",
                End.UNKNOWN_TICKET,
                reply=le32(LINK_PERMISSION_DENIED),
            )
        step.to_client += le32(LINK_OK)
        self.established = True
        self.passthrough = self._passthrough_after_link
        return True

    def relay(self, data: bytes) -> bytes:
        """Once established: what of `data` goes on to QEMU."""
        if self.input_channel:
            self.input_seen = True
        return data if self._passthrough_after_link else self._messages(data)

    def _secret_matches(self, encrypted: bytes) -> bool:
        try:
            secret = proxy_key().decrypt(encrypted, _OAEP).rstrip(b"\0")
        except ValueError:
            return False
        return hmac.compare_digest(hashlib.sha256(secret).hexdigest(), self._secret)

    def _messages(self, data: bytes) -> bytes:
        out = bytearray()
        view = memoryview(data)
        pos, end = 0, len(data)
        header = self._header_format
        while pos < end:
            if self._body_left:
                n = min(self._body_left, end - pos)
                if self._body_pass:
                    out += view[pos : pos + n]
                self._body_left -= n
                pos += n
                continue
            take = min(header.size - len(self._header), end - pos)
            self._header += view[pos : pos + take]
            pos += take
            if len(self._header) < header.size:
                break
            out += self._decide(bytes(self._header))
            self._header.clear()
        return bytes(out)

    def _decide(self, header: bytes) -> bytes:
        if self._header_format is MINI_HEADER:
            kind, size = MINI_HEADER.unpack(header)
        else:
            _serial, kind, size, _subs = FULL_HEADER.unpack(header)
        channel = self.link.channel_type
        if size > WATCH_BODY_MAX:
            raise Violation(f"a {size}-byte message on the {self.link.channel_name} channel")
        if kind in WATCH_ALLOWED.get(channel, ()):
            self._body_left, self._body_pass = size, True
            return header
        if kind in WATCH_DROPPED.get(channel, ()):
            self.dropped_messages += 1
            self._body_left, self._body_pass = size, False
            return b""
        raise Violation(f"message {kind} on a watcher's {self.link.channel_name} channel")


def spice_channel_refusal(link: SpiceLink, *, watch_only: bool) -> Violation | None:
    """Why a client may not have this channel, or None: a watcher gets only what shows the
    screen and plays its sound."""
    if watch_only and link.channel_type not in WATCH_CHANNELS:
        return Violation(f"a watcher asked for the {link.channel_name} channel", End.VIEW_ONLY)
    return None
