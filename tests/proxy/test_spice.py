"""SPICE at the proxy, as state machines: the client's link read as a stream, the proxy's own
link and authentication to QEMU (RSA-OAEP with QEMU's key), its answer to the client, and a
watcher's messages against each channel's allowlist."""

import hashlib
import struct

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from console.errors import End
from console.proxy.spice import (
    CAP_AUTH_SASL,
    SpiceClientSide,
    SpiceLinkReader,
    SpiceServerAuth,
    proxy_public_key,
    spice_channel_refusal,
)
from console.proxy.wire import ConsoleRefusedProxy, Violation
from tests.helpers import OAEP, spice_link

MAIN, DISPLAY, INPUTS, CURSOR, PLAYBACK, RECORD, USBREDIR = 1, 2, 3, 4, 5, 6, 9


def mini(kind: int, body: bytes = b"") -> bytes:
    return struct.pack("<HI", kind, len(body)) + body


def qemu_reply(key: rsa.RSAPrivateKey, caps: int = 0b1111) -> bytes:
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    body = struct.pack("<I", 0) + public + struct.pack("<III", 1, 1, 178) + struct.pack("<II", caps, 0x5)
    return b"REDQ" + struct.pack("<III", 2, 2, len(body)) + body


@pytest.fixture(scope="module")
def qemu_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - SPICE's


def linked(qemu_key, channel: int, *, watch_only: bool, secret: str = "") -> tuple[SpiceClientSide, bytes]:
    link = SpiceLinkReader().feed(spice_link(channel))
    server = SpiceServerAuth(link, "pw")
    server.feed(qemu_reply(qemu_key))
    server.feed(struct.pack("<I", 0))
    side = SpiceClientSide(link, server, watch_only=watch_only, client_secret_sha256=secret)
    return side, side.reply


def authenticate(side: SpiceClientSide, password: str = "") -> bytes:
    key = serialization.load_der_public_key(proxy_public_key())
    step = side.feed(struct.pack("<I", 1) + key.encrypt(password.encode() + b"\0", OAEP))
    assert side.established or step.to_client == struct.pack("<I", 7)
    return step.to_client


# -- the client's link --------------------------------------------------------------------------


def test_a_link_split_over_two_frames_at_any_point_is_read_whole():
    """The review linked a watcher's inputs channel by splitting its link over two frames."""
    message = spice_link(INPUTS)
    for split in range(1, len(message)):
        reader = SpiceLinkReader()
        assert reader.feed(message[:split]) is None
        link = reader.feed(message[split:])
        assert link is not None and link.channel_type == INPUTS, split
        refusal = spice_channel_refusal(link, watch_only=True)
        assert refusal is not None and refusal.end == End.VIEW_ONLY


@pytest.mark.parametrize("channel", [INPUTS, RECORD, 7, 8, USBREDIR, 10, 11])
def test_a_watcher_gets_no_channel_that_acts_on_the_vm(channel):
    link = SpiceLinkReader().feed(spice_link(channel))
    assert spice_channel_refusal(link, watch_only=True) is not None
    assert spice_channel_refusal(link, watch_only=False) is None


@pytest.mark.parametrize("channel", [MAIN, DISPLAY, CURSOR, PLAYBACK])
def test_a_watcher_gets_what_shows_the_screen_and_plays_its_sound(channel):
    assert spice_channel_refusal(SpiceLinkReader().feed(spice_link(channel)), watch_only=True) is None


@pytest.mark.parametrize(
    "message",
    [
        b"GET / HTTP/1.1\r\n\r\n",  # not SPICE
        b"REDQ" + struct.pack("<III", 1, 0, 18) + bytes(18),  # another major version
        b"REDQ" + struct.pack("<III", 2, 2, 1 << 20),  # a link message of 1 MiB
        b"REDQ" + struct.pack("<III", 2, 2, 22) + struct.pack("<IBBIII", 0, 1, 0, 1000, 0, 18) + bytes(4),
    ],
)
def test_a_malformed_link_ends_the_connection(message):
    with pytest.raises(Violation):
        SpiceLinkReader().feed(message)


# -- the proxy's link to QEMU ------------------------------------------------------------------


def test_the_proxy_authenticates_with_the_password_encrypted_for_qemu(qemu_key):
    link = SpiceLinkReader().feed(spice_link(MAIN))
    server = SpiceServerAuth(link, "the-vm-password")
    assert server.greeting[20] == MAIN
    sent = server.feed(qemu_reply(qemu_key))
    assert struct.unpack_from("<I", sent)[0] == 1  # SPICE's own ticket
    assert qemu_key.decrypt(sent[4:], OAEP) == b"the-vm-password\0"
    assert not server.done
    server.feed(struct.pack("<I", 0) + mini(103, b"main init"))
    assert server.done and server.rest() == mini(103, b"main init")


def test_a_refused_password_says_so(qemu_key):
    server = SpiceServerAuth(SpiceLinkReader().feed(spice_link(MAIN)), "old")
    server.feed(qemu_reply(qemu_key))
    with pytest.raises(ConsoleRefusedProxy) as refused:
        server.feed(struct.pack("<I", 7))
    assert refused.value.auth


def test_the_proxy_never_offers_sasl():
    sasl = b"REDQ" + struct.pack("<III", 2, 2, 22) + struct.pack("<IBBIII", 0, 1, 0, 1, 0, 18)
    link = SpiceLinkReader().feed(sasl + struct.pack("<I", 0b1111))
    assert link.common_caps == [0b1111]
    sent = SpiceServerAuth(link, "pw").greeting
    assert struct.unpack_from("<I", sent, 16 + 18)[0] & (1 << CAP_AUTH_SASL) == 0


# -- the proxy's answer to the client -------------------------------------------------------------


def test_the_client_gets_the_proxys_key_and_qemus_capabilities_without_sasl(qemu_key):
    side, reply = linked(qemu_key, MAIN, watch_only=False)
    assert reply[20 : 20 + 162] == proxy_public_key()
    common, channel, offset = struct.unpack_from("<III", reply, 16 + 166)
    assert (common, channel, offset) == (1, 1, 178)
    assert struct.unpack_from("<II", reply, 16 + 178) == (0b1011, 0x5)  # SASL removed
    assert authenticate(side) == struct.pack("<I", 0)


def test_a_vv_files_one_time_secret_is_checked(qemu_key):
    digest = hashlib.sha256(b"one-time").hexdigest()
    side, _ = linked(qemu_key, MAIN, watch_only=False, secret=digest)
    assert authenticate(side, "one-time") == struct.pack("<I", 0)
    wrong, _ = linked(qemu_key, MAIN, watch_only=False, secret=digest)
    with pytest.raises(Violation):
        authenticate(wrong, "guessed")


def test_a_users_channel_passes_untouched_after_the_link(qemu_key):
    side, _ = linked(qemu_key, USBREDIR, watch_only=False)
    authenticate(side)
    assert side.passthrough
    assert side.feed(b"anything at all").to_server == b"anything at all"


# -- a watcher's messages -----------------------------------------------------------------------------


def test_a_watchers_main_channel_drops_the_agent_and_the_mouse_mode(qemu_key):
    side, _ = linked(qemu_key, MAIN, watch_only=True)
    authenticate(side)
    agent = mini(107, b"clipboard: rm -rf /")
    stream = mini(2) + mini(106, struct.pack("<I", 10)) + agent + mini(105, struct.pack("<I", 2)) + mini(104)
    out = side.feed(stream).to_server
    assert out == mini(2) + mini(104)
    assert side.dropped_messages == 3


def test_a_watchers_display_channel_passes_its_own_messages_split_anywhere(qemu_key):
    stream = mini(101, bytes(14)) + mini(102, bytes(28)) + mini(1, bytes(4)) + mini(3, bytes(12))
    for split in range(1, len(stream)):
        side, _ = linked(qemu_key, DISPLAY, watch_only=True)
        authenticate(side)
        assert side.feed(stream[:split]).to_server + side.feed(stream[split:]).to_server == stream


@pytest.mark.parametrize("channel, kind", [(MAIN, 4), (MAIN, 5), (MAIN, 999), (DISPLAY, 106), (CURSOR, 101)])
def test_a_watchers_unknown_or_migration_messages_end_the_connection(qemu_key, channel, kind):
    side, _ = linked(qemu_key, channel, watch_only=True)
    authenticate(side)
    with pytest.raises(Violation):
        side.feed(mini(kind, b"x"))


def test_a_watchers_message_beyond_the_bound_ends_the_connection(qemu_key):
    side, _ = linked(qemu_key, DISPLAY, watch_only=True)
    authenticate(side)
    with pytest.raises(Violation):
        side.feed(struct.pack("<HI", 102, 1 << 30))
