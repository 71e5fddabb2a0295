"""The RFB client-stream filter that keeps the client's clipboard out of the VM."""

import struct

import pytest

from console.rfb import VIEW_ONLY_DROPS, RfbClientFilter, RfbProtocolError

HANDSHAKE = b"RFB 003.008\n" + bytes([2]) + bytes(range(16)) + bytes([1])  # VNC auth, shared
KEY = bytes([4, 1, 0, 0]) + struct.pack(">I", 0x61)
POINTER = bytes([5, 0]) + struct.pack(">HH", 10, 20)
ENCODINGS = bytes([2, 0]) + struct.pack(">H", 2) + struct.pack(">ii", 0, -223)
QEMU_KEY = bytes([255, 0]) + struct.pack(">HII", 1, 0x61, 0x1E)


def cut(text: bytes) -> bytes:
    return bytes([6, 0, 0, 0]) + struct.pack(">I", len(text)) + text


def test_clipboard_messages_are_dropped_and_everything_else_passes():
    stream = HANDSHAKE + ENCODINGS + KEY + cut(b"secret password") + POINTER + QEMU_KEY + cut(b"x")
    f = RfbClientFilter()
    assert f.feed(stream) == HANDSHAKE + ENCODINGS + KEY + POINTER + QEMU_KEY
    assert (f.dropped_messages, f.dropped_bytes) == (2, 16)


def test_messages_split_anywhere_across_frames():
    stream = HANDSHAKE + KEY + cut(b"clip" * 100) + POINTER
    f = RfbClientFilter()
    out = b"".join(f.feed(stream[i : i + 3]) for i in range(0, len(stream), 3))
    assert out == HANDSHAKE + KEY + POINTER


def test_without_authentication_the_handshake_is_shorter():
    handshake = b"RFB 003.008\n" + bytes([1]) + bytes([1])  # security type None, then ClientInit
    f = RfbClientFilter()
    assert f.feed(handshake + cut(b"abc") + KEY) == handshake + KEY


def test_a_view_only_client_keeps_only_what_does_not_touch_the_vm():
    update_request = bytes([3, 1]) + struct.pack(">HHHH", 0, 0, 640, 480)
    stream = HANDSHAKE + ENCODINGS + KEY + POINTER + QEMU_KEY + cut(b"x") + update_request
    assert RfbClientFilter(VIEW_ONLY_DROPS).feed(stream) == HANDSHAKE + ENCODINGS + update_request


def test_an_unknown_message_is_refused_not_guessed_at():
    with pytest.raises(RfbProtocolError):
        RfbClientFilter().feed(HANDSHAKE + bytes([99, 0, 0, 0]))


def test_clipboard_let_through_is_counted_for_the_audit():
    f = RfbClientFilter(frozenset())
    stream = HANDSHAKE + KEY + cut(b"hello") + cut(b"world!")
    assert f.feed(stream) == stream
    assert (f.passed_messages, f.passed_bytes, f.dropped_messages) == (2, 11, 0)
