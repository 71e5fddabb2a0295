"""VNC at the proxy, as state machines: the proxy's authentication to QEMU, and the client's
side, whose whole stream it follows (handshake from both sides, then each message against its
role's allowlist; fail closed; bounded)."""

import struct

import pytest

from console.errors import End
from console.proxy.rfb import (
    CUT_TEXT_MAX,
    EXTENDED_CLIPBOARD,
    RfbClientSide,
    RfbPolicy,
    RfbServerAuth,
    vnc_des_response,
)
from console.proxy.wire import ConsoleRefusedProxy, Violation

KEY = bytes([4, 1, 0, 0]) + struct.pack(">I", 0x61)
POINTER = bytes([5, 0]) + struct.pack(">HH", 10, 20)
ENCODINGS = bytes([2, 0]) + struct.pack(">H", 3) + struct.pack(">iii", 0, -223, EXTENDED_CLIPBOARD)
PIXEL_FORMAT = bytes([0, 0, 0, 0]) + bytes(16)
UPDATE_REQUEST = bytes([3, 1]) + struct.pack(">HHHH", 0, 0, 640, 480)
QEMU_KEY = bytes([255, 0]) + struct.pack(">HII", 1, 0x61, 0x1E)
QEMU_AUDIO = bytes([255, 1]) + struct.pack(">H", 0)
XVP = bytes([250, 0, 1, 2])  # xvp: shutdown
DESKTOP_SIZE = bytes([251, 0]) + struct.pack(">HHBx", 800, 600, 1) + bytes(16)


def cut(text: bytes) -> bytes:
    return bytes([6, 0, 0, 0]) + struct.pack(">I", len(text)) + text


def ext_clip(flags: int, payload: bytes = b"") -> bytes:
    return bytes([6, 0, 0, 0]) + struct.pack(">iI", -(4 + len(payload)), flags) + payload


CLIP_CAPS = ext_clip((1 << 24) | (1 << 25) | (1 << 28) | 1, struct.pack(">I", 1 << 20))
CLIP_REQUEST = ext_clip((1 << 25) | 1)
CLIP_PROVIDE = ext_clip((1 << 28) | 1, b"zlib-data")


def established(policy: RfbPolicy = RfbPolicy()) -> RfbClientSide:  # noqa: B008 - frozen
    side = RfbClientSide(policy)
    side.feed(b"RFB 003.008\n")
    side.feed(bytes([1]))
    assert side.feed(bytes([1])).to_server == b"\x01"
    assert side.established
    return side


def owner(clipboard: str = "both") -> RfbClientSide:
    return established(RfbPolicy(clipboard=clipboard))


def watcher() -> RfbClientSide:
    return established(RfbPolicy(watch_only=True))


# -- the proxy authenticates to QEMU -----------------------------------------------------------


def test_the_proxy_answers_qemus_challenge_with_the_password():
    auth = RfbServerAuth("s3cret!!")
    assert auth.feed(b"RFB 003.008\n") == b"RFB 003.008\n"
    assert auth.feed(bytes([1, 2])) == bytes([2])
    challenge = bytes(range(16))
    assert auth.feed(challenge) == vnc_des_response("s3cret!!", challenge)
    assert not auth.done
    auth.feed(bytes(4))
    assert auth.done


def test_vnc_des_uses_the_password_bits_reversed_and_only_its_first_8_characters():
    # Known answer: DES with each key byte's bits reversed (b"password" becomes 0e86ceceeef64e26);
    # `openssl enc -des-ecb -K 0e86ceceeef64e26 -nopad` of 16 zero bytes gives the same.
    assert vnc_des_response("password", bytes(16)).hex() == "ff97502e9422f089ff97502e9422f089"
    assert vnc_des_response("password-and-more", bytes(16)) == vnc_des_response("password", bytes(16))


def test_a_refused_password_says_so():
    auth = RfbServerAuth("wrong")
    auth.feed(b"RFB 003.008\n" + bytes([1, 2]))
    auth.feed(bytes(16))
    with pytest.raises(ConsoleRefusedProxy) as refused:
        auth.feed(struct.pack(">II", 1, 14) + b"Authentication")
    assert refused.value.auth and "Authentication" in str(refused.value)


def test_a_console_that_offers_no_vnc_authentication_is_refused():
    auth = RfbServerAuth("pw")
    auth.feed(b"RFB 003.008\n")
    with pytest.raises(ConsoleRefusedProxy):
        auth.feed(bytes([1, 19]))  # VeNCrypt only


# -- the client's handshake: the proxy is its server ------------------------------------------


@pytest.mark.parametrize(
    "version, replies",
    [
        (b"RFB 003.008\n", [bytes([1, 1]), bytes(4)]),  # types, then SecurityResult
        (b"RFB 003.007\n", [bytes([1, 1]), b""]),  # 3.7: no SecurityResult for None
    ],
)
def test_the_client_is_offered_security_none(version, replies):
    side = RfbClientSide(RfbPolicy())
    assert side.greeting == b"RFB 003.008\n"
    assert side.feed(version).to_client == replies[0]
    assert side.feed(bytes([1])).to_client == replies[1]
    assert side.feed(bytes([0])).to_server == b"\x01"  # exclusive asked, shared sent
    assert side.established


def test_rfb_33_gets_its_security_type_from_the_server_and_sends_no_choice():
    """RFB 3.3: the server names the security type (a u32) and the client answers nothing; a
    client that sends a DES response anyway is read as ClientInit and messages, and for a
    watcher its "key events" never pass."""
    side = RfbClientSide(RfbPolicy(watch_only=True))
    assert side.feed(b"RFB 003.003\n").to_client == struct.pack(">I", 1)
    step = side.feed(bytes([2]) + KEY + KEY[:7])  # 16 bytes shaped like a DES response
    assert step.to_server == b"\x01"  # only ClientInit, as shared
    assert side.established and side.dropped_messages == 1


def test_an_unknown_version_or_security_type_ends_the_handshake():
    with pytest.raises(Violation):
        RfbClientSide(RfbPolicy()).feed(b"RFB 004.000\n")
    side = RfbClientSide(RfbPolicy())
    side.feed(b"RFB 003.008\n")
    with pytest.raises(Violation):
        side.feed(bytes([2]))  # VNC authentication was not offered


def test_a_watchers_client_init_is_always_shared():
    """An exclusive ClientInit (0) from a watcher would make QEMU drop every other client."""
    side = RfbClientSide(RfbPolicy(watch_only=True))
    side.feed(b"RFB 003.008\n")
    side.feed(bytes([1]))
    assert side.feed(bytes([0])).to_server == b"\x01"


# -- messages: fail closed, allowlists, bounds ---------------------------------------------------


def test_an_unknown_message_ends_the_connection_and_nothing_after_it_passes():
    """Two frames' worth in one write: an unknown type, then key events. The state machine
    raises; the gate writes nothing of the call (fail closed)."""
    side = owner("off")
    with pytest.raises(Violation) as violation:
        side.feed(bytes([7]) + KEY * 20)
    assert violation.value.end == End.PROTOCOL_VIOLATION


def test_a_watcher_passes_only_what_cannot_act_on_the_vm():
    side = watcher()
    stream = (
        PIXEL_FORMAT
        + ENCODINGS
        + UPDATE_REQUEST
        + KEY
        + POINTER
        + QEMU_KEY
        + QEMU_AUDIO
        + XVP
        + DESKTOP_SIZE
        + cut(b"rm -rf /")
        + CLIP_PROVIDE
        + UPDATE_REQUEST
    )
    out = side.feed(stream).to_server
    without_clipboard = bytes([2, 0]) + struct.pack(">H", 2) + struct.pack(">ii", 0, -223)
    assert out == PIXEL_FORMAT + without_clipboard + UPDATE_REQUEST + UPDATE_REQUEST
    assert side.dropped_messages == 8 and not side.input_seen


@pytest.mark.parametrize("kind", [7, 9, 127, 149, 252, 253, 254])
def test_a_watchers_unknown_message_types_end_the_connection(kind):
    with pytest.raises(Violation):
        watcher().feed(bytes([kind]) + bytes(30))


def test_a_qemu_message_of_an_unknown_subtype_ends_the_connection():
    with pytest.raises(Violation):
        owner().feed(bytes([255, 9]) + bytes(10))


def test_a_huge_client_cut_text_ends_the_connection_before_any_of_it_is_held():
    side = owner()
    header = bytes([6, 0, 0, 0]) + struct.pack(">I", 2**31 - 1)
    with pytest.raises(Violation, match="ClientCutText"):
        side.feed(header)
    extended = bytes([6, 0, 0, 0]) + struct.pack(">i", -(CUT_TEXT_MAX + 5))
    with pytest.raises(Violation):
        owner().feed(extended + bytes(4))


def test_bodies_are_streamed_not_held():
    """A 1 MiB clipboard passes piece by piece: each piece goes on as it comes."""
    side = owner()
    text = b"x" * CUT_TEXT_MAX
    message = cut(text)
    passed = b""
    for i in range(0, len(message), 64 * 1024):
        out = side.feed(message[i : i + 64 * 1024]).to_server
        assert len(out) <= 64 * 1024
        passed += out
    assert passed == message


def test_a_set_encodings_beyond_the_bound_ends_the_connection():
    with pytest.raises(Violation):
        owner().feed(bytes([2, 0]) + struct.pack(">H", 5000))


def test_messages_split_at_every_point_over_two_frames_give_the_same_result():
    stream = (
        ENCODINGS + KEY + cut(b"clip") + CLIP_REQUEST + POINTER + QEMU_KEY + DESKTOP_SIZE + UPDATE_REQUEST
    )
    for policy in (RfbPolicy(clipboard="from-vm"), RfbPolicy(watch_only=True)):
        whole = established(policy).feed(stream).to_server
        for split in range(1, len(stream)):
            side = established(policy)
            assert side.feed(stream[:split]).to_server + side.feed(stream[split:]).to_server == whole, split


def test_the_handshake_split_anywhere_is_followed():
    handshake = b"RFB 003.008\n" + bytes([1]) + bytes([0]) + KEY
    for split in range(1, len(handshake)):
        side = RfbClientSide(RfbPolicy(watch_only=True))
        first, second = side.feed(handshake[:split]), side.feed(handshake[split:])
        assert first.to_server + second.to_server == b"\x01"
        assert first.to_client + second.to_client == bytes([1, 1]) + bytes(4)


def test_keys_and_the_mouse_of_a_user_count_as_input():
    side = owner()
    side.feed(UPDATE_REQUEST)
    assert not side.input_seen
    side.feed(KEY)
    assert side.input_seen


# -- the clipboard policy (console.clipboard) ------------------------------------------------------


@pytest.mark.parametrize(
    "policy, passed",
    [
        ("both", {"legacy", "caps", "request", "provide"}),
        ("to-vm", {"legacy", "caps", "provide"}),
        ("from-vm", {"caps", "request"}),  # noVNC's extended clipboard still asks for the VM's
        ("off", set()),
    ],
)
def test_the_clipboard_passes_only_the_ways_the_policy_allows(policy, passed):
    messages = {"legacy": cut(b"secret"), "caps": CLIP_CAPS, "request": CLIP_REQUEST, "provide": CLIP_PROVIDE}
    side = owner(policy)
    for name, message in messages.items():
        out = side.feed(message + KEY).to_server
        assert out == (message + KEY if name in passed else KEY), name
    assert side.clipboard_dropped_bytes == (6 if "legacy" not in passed else 0) + (
        len(b"zlib-data") if "provide" not in passed else 0
    )
