"""The benchmark's RFB, both sides: what its console stand-in (bench/backend.py) answers, and
how its clients open a session (authenticating themselves where nothing does it for them: raw
TCP, stock websockify, the landed portal; offered security type None by the portal's proxy).

Written apart from console/proxy/rfb.py on purpose: the stand-in checks the proxy's VNC
authentication with its own implementation."""

from __future__ import annotations

import struct

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes

SERVER_INIT = struct.pack(">HH", 640, 480) + bytes(16) + struct.pack(">I", 5) + b"bench"


def vnc_des_response(password: str, challenge: bytes) -> bytes:
    key = bytes(int(f"{b:08b}"[::-1], 2) for b in password.encode("latin-1")[:8].ljust(8, b"\0"))
    cipher = Cipher(TripleDES(key * 3), modes.ECB())  # noqa: S305 - VNC authentication is DES-ECB
    encryptor = cipher.encryptor()
    return encryptor.update(challenge) + encryptor.finalize()


def cut(payload: bytes) -> bytes:
    """A ClientCutText carrying `payload`: what the benchmark's clients send, well-formed RFB."""
    return bytes([6, 0, 0, 0]) + struct.pack(">I", len(payload)) + payload


async def rfb_open(conn, command: bytes, password: str | None) -> None:  # noqa: ANN001 - a bench Conn
    """Open a session on `conn` up to the stand-in's mode, set by `command`: authenticating with
    `password`, or (None) taking the security type None the portal's proxy offers."""
    assert await conn.read(12) == b"RFB 003.008\n"  # noqa: S101
    conn.send(b"RFB 003.008\n")
    types = await conn.read((await conn.read(1))[0])
    if password is None:
        assert 1 in types, types  # noqa: S101
        conn.send(b"\x01")
    else:
        conn.send(b"\x02")
        conn.send(vnc_des_response(password, await conn.read(16)))
    if await conn.read(4) != bytes(4):
        raise ConnectionError("the console refused the session")
    conn.send(b"\x01")  # ClientInit, shared
    await conn.read(len(SERVER_INIT))
    conn.send(cut(command))
