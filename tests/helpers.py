"""Helpers for proxy tests: console stand-ins (a VNC and a SPICE server that authenticate the
proxy, then greet and echo), the client side of their handshakes, and tickets pointing at them."""

import asyncio
import hashlib
import secrets
import struct
from datetime import timedelta
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from django.utils import timezone

from console.graphics import graphics_password_record
from console.hypervisor import hypervisor_for
from console.models import ConsoleTicket
from console.proxy.rfb import vnc_des_response
from console.tickets import auth_hash, token_hash

TEST_NODE = Path(__file__).resolve().parent / "fixtures" / "testnode.xml"
# libvirt's test driver with running domains vm-a and vm-b (see fixtures/testnode.xml).
TEST_NODE_URI = f"test://{TEST_NODE}"
ORIGIN = "http://127.0.0.1:8000"
ORIGIN_HEADER = (b"origin", ORIGIN.encode())
HOST = (b"host", b"127.0.0.1:8000")


def login_session(user) -> str:
    """A new login session of `user`: its key."""
    from django.test import Client

    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


def session_cookie(user, session_key: str | None = None) -> tuple[bytes, bytes]:
    """The Cookie header of a browser logged in as `user` (none for AnonymousUser)."""
    if not user.is_authenticated:
        return (b"cookie", b"")
    if session_key is None:
        session_key = login_session(user)
    return (b"cookie", f"sessionid={session_key}".encode())


async def communicator(
    vm_id,
    token,
    user,
    headers=(ORIGIN_HEADER, HOST),
    subprotocols=("binary",),
    session_key=None,
    path="console",
):
    """A WebsocketCommunicator on the portal's console WebSocket, as a logged-in browser opens it."""
    from channels.db import database_sync_to_async
    from channels.testing import WebsocketCommunicator

    from portal.asgi import application

    cookie = await database_sync_to_async(session_cookie)(user, session_key)
    comm = WebsocketCommunicator(
        application,
        f"/ws/{path}/{vm_id}/?token={token}",
        headers=[*headers, cookie],
        subprotocols=list(subprotocols),
    )
    comm.scope["client"] = ["127.0.0.1", 50000]
    return comm


PASSWORD = "stand-in-pw"
OAEP = padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)  # noqa: S303


class EchoServer:
    """A VNC console stand-in: RFB 3.8 with VNC authentication against `password` (as QEMU's),
    then "HELLO" after ClientInit, then it echoes; remembers how many connected, what shared
    flags the clients sent, and how many failed to authenticate."""

    def __init__(self, password: str = PASSWORD, on_auth_failure=None):
        self.password = password
        self.on_auth_failure = on_auth_failure  # awaited before QEMU would answer "refused"
        self.connections = 0
        self.open = 0
        self.writers = []
        self.shared_flags = []
        self.auth_failures = 0

    async def authenticate(self, reader, writer) -> bool:
        writer.write(b"RFB 003.008\n")
        await reader.readexactly(12)
        writer.write(bytes([1, 2]))
        if (await reader.readexactly(1))[0] != 2:
            return False
        challenge = secrets.token_bytes(16)
        writer.write(challenge)
        if await reader.readexactly(16) != vnc_des_response(self.password, challenge):
            self.auth_failures += 1
            if self.on_auth_failure is not None:
                await self.on_auth_failure()
            writer.write(struct.pack(">II", 1, 6) + b"denied")
            await writer.drain()
            return False
        writer.write(struct.pack(">I", 0))
        self.shared_flags.append((await reader.readexactly(1))[0])
        return True

    async def handle(self, reader, writer):
        self.connections += 1
        self.open += 1
        self.writers.append(writer)
        try:
            if not await self.authenticate(reader, writer):
                return
            writer.write(b"HELLO")
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.open -= 1
            writer.close()

    async def __aenter__(self):
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc):
        self.server.close()
        for writer in self.writers:
            writer.close()
        await self.server.wait_closed()


class SpiceServer(EchoServer):
    """A SPICE console stand-in: answers each channel's link with its own RSA key, checks the
    ticket against `password` (as QEMU does), then greets with "HELLO" and echoes. `links`
    records the channel types linked."""

    def __init__(self, password: str = PASSWORD, on_auth_failure=None):
        super().__init__(password, on_auth_failure)
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
        self.links = []

    async def authenticate(self, reader, writer) -> bool:
        header = await reader.readexactly(16)
        size = struct.unpack_from("<I", header, 12)[0]
        body = await reader.readexactly(size)
        self.links.append(body[4])
        public = self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        caps = struct.pack("<I", 0b1011)  # auth selection, SPICE auth, mini header
        reply = struct.pack("<I", 0) + public + struct.pack("<III", 1, 0, 178) + caps
        writer.write(b"REDQ" + struct.pack("<III", 2, 2, len(reply)) + reply)
        mechanism = struct.unpack("<I", await reader.readexactly(4))[0]
        ticket = self.key.decrypt(await reader.readexactly(128), OAEP)
        if mechanism != 1 or ticket != self.password.encode() + b"\0":
            self.auth_failures += 1
            writer.write(struct.pack("<I", 7))
            await writer.drain()
            return False
        writer.write(struct.pack("<I", 0))
        return True


def spice_link(channel: int, connection_id: int = 0) -> bytes:
    """A client's SpiceLinkMess (with its header) for `channel`, as spice-html5 sends it."""
    body = struct.pack("<IBBIII", connection_id, channel, 0, 1, 0, 18) + struct.pack("<I", 0b1001)
    return b"REDQ" + struct.pack("<III", 2, 2, len(body)) + body


async def spice_handshake(comm, channel: int = 1, *, secret: str = "") -> None:
    """The client side of a SPICE channel's link through the proxy, until the console greets."""
    await comm.send_to(bytes_data=spice_link(channel))
    reply = await receive_exactly(comm, 16)
    reply += await receive_exactly(comm, struct.unpack_from("<I", reply, 12)[0])
    assert struct.unpack_from("<I", reply, 16)[0] == 0, "link refused"
    key = serialization.load_der_public_key(reply[20 : 20 + 162])
    await comm.send_to(bytes_data=struct.pack("<I", 1) + key.encrypt(secret.encode() + b"\0", OAEP))
    assert await receive_exactly(comm, 4) == struct.pack("<I", 0)
    assert await receive_exactly(comm, 5) == b"HELLO"


async def receive_exactly(comm, n: int) -> bytes:
    """The next `n` bytes the proxy sent over a WebsocketCommunicator, however it framed them
    (what came beyond them waits on the communicator for the next call)."""
    buffer = getattr(comm, "pending_bytes", b"")
    while len(buffer) < n:
        buffer += await comm.receive_from()
    comm.pending_bytes = buffer[n:]
    return buffer[:n]


async def rfb_handshake(
    comm, *, version: bytes = b"RFB 003.008\n", shared: int = 1, server_init: bool = False
) -> None:
    """The client side of VNC through the proxy: it offers security type None; until the
    stand-in greets ("HELLO"), or, with `server_init`, until a real QEMU's ServerInit follows."""
    assert await receive_exactly(comm, 12) == b"RFB 003.008\n"
    await comm.send_to(bytes_data=version)
    if version == b"RFB 003.003\n":
        assert await receive_exactly(comm, 4) == struct.pack(">I", 1)
    else:
        assert await receive_exactly(comm, 2) == bytes([1, 1])
        await comm.send_to(bytes_data=bytes([1]))
        if version == b"RFB 003.008\n":
            assert await receive_exactly(comm, 4) == bytes(4)
    await comm.send_to(bytes_data=bytes([shared]))
    if not server_init:
        assert await receive_exactly(comm, 5) == b"HELLO"


def make_ticket(
    user,
    vm,
    port,
    *,
    seconds=60,
    max_connections=8,
    protocol="vnc",
    kind=ConsoleTicket.Kind.BROWSER,
    origin=ORIGIN,
    session_key="",
    view_only=False,
    password=PASSWORD,
    client_secret="",
):
    """A ticket as `console_ticket_issue` makes one, to a console stand-in at 127.0.0.1:`port`,
    whose graphics password the portal holds (as a rotation would have left it)."""
    token = secrets.token_urlsafe(32)
    domain_id = hypervisor_for(vm.host).domain_id(vm.name)
    graphics_password_record(
        vm=vm, domain_id=domain_id, password=password, valid_until=timezone.now() + timedelta(minutes=10)
    )
    ConsoleTicket.objects.create(
        token_hash=token_hash(token),
        user=user,
        vm=vm,
        kind=kind,
        protocol=protocol,
        address="127.0.0.1",
        port=port,
        expires_at=timezone.now() + timedelta(seconds=seconds),
        max_connections=max_connections,
        origin=origin,
        session_key=session_key,
        auth_hash=auth_hash(user),
        domain_id=domain_id,
        view_only=view_only,
        client_secret_hash=hashlib.sha256(client_secret.encode()).hexdigest() if client_secret else "",
    )
    return token


class SerialReader:
    """Reads a VM's serial console through libvirt, as a test's independent witness of what
    the guest did: the bytes it wrote, and a terminal's answers to its size queries."""

    def __init__(self, host, name: str) -> None:
        import threading
        from concurrent.futures import ThreadPoolExecutor

        self.output = bytearray()
        self.ended = threading.Event()
        # In a thread of its own: Playwright's sync API runs an event loop in the test's thread.
        with ThreadPoolExecutor(1) as pool:
            opened = pool.submit(hypervisor_for(host).open_serial, name, on_output=self._output, force=True)
            self.stream = opened.result()

    def _output(self, data: bytes | None) -> None:
        if data is None:
            self.ended.set()
            return
        self.output += data
        if b"\x1b[6n" in data:  # the guest asks where the cursor is: answer as an 80x24 terminal
            self.stream.write(b"\x1b[24;80R")

    def write(self, data: bytes) -> None:
        self.stream.write(data)

    def wait_for(self, needle: bytes, timeout: float = 30) -> None:
        import time

        deadline = time.monotonic() + timeout
        while needle not in self.output:
            if time.monotonic() > deadline:
                tail = bytes(self.output[-400:])
                raise AssertionError(f"{needle!r} never came on the serial console: {tail!r}")
            time.sleep(0.05)

    def wait_for_prompt(self, timeout: float = 60) -> None:
        """Until the guest's shell answers on the serial console (it boots in seconds)."""
        import time

        deadline = time.monotonic() + timeout
        while b"guest:" not in self.output:
            if time.monotonic() > deadline:
                raise AssertionError(f"the guest never gave a prompt: {bytes(self.output[-400:])!r}")
            self.write(b"\r")
            time.sleep(0.5)

    def close(self) -> None:
        self.stream.close()


class WsReader:
    """Exact reads from a synchronous WebSocket (websockets.sync), however the proxy framed them."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.buffer = b""

    def read(self, n: int, timeout: float = 10) -> bytes:
        while len(self.buffer) < n:
            self.buffer += self.ws.recv(timeout=timeout)
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out


def rfb_client_handshake(ws, *, version: bytes = b"RFB 003.008\n", shared: int = 1) -> WsReader:
    """A VNC client's handshake through the portal's proxy (security type None) up to QEMU's
    ServerInit, over a synchronous WebSocket; the reader for what follows."""
    reader = WsReader(ws)
    assert reader.read(12) == b"RFB 003.008\n"
    ws.send(version)
    if version == b"RFB 003.003\n":
        assert reader.read(4) == struct.pack(">I", 1)
    else:
        assert reader.read(2) == bytes([1, 1])
        ws.send(bytes([1]))
        if version == b"RFB 003.008\n":
            assert reader.read(4) == bytes(4)
    ws.send(bytes([shared]))
    head = reader.read(24)  # ServerInit: size, pixel format, name length
    reader.read(struct.unpack_from(">I", head, 20)[0])
    return reader
