"""Helpers for proxy tests: a console stand-in and tickets pointing at it."""

import asyncio
import secrets
from datetime import timedelta
from pathlib import Path

from django.utils import timezone

from console.hypervisor import hypervisor_for
from console.models import ConsoleTicket
from console.tickets import auth_hash, token_hash

TEST_NODE = Path(__file__).resolve().parent / "fixtures" / "testnode.xml"
# libvirt's test driver with running domains vm-a and vm-b (see fixtures/testnode.xml).
TEST_NODE_URI = f"test://{TEST_NODE}"
ORIGIN = "http://127.0.0.1:8000"


class EchoServer:
    """A console stand-in: greets, then echoes; remembers how many connected."""

    def __init__(self):
        self.connections = 0
        self.open = 0
        self.writers = []

    async def handle(self, reader, writer):
        self.connections += 1
        self.open += 1
        self.writers.append(writer)
        writer.write(b"HELLO")
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
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
):
    """A ticket as `console_ticket_issue` makes one, to a console stand-in at 127.0.0.1:`port`."""
    token = secrets.token_urlsafe(32)
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
        domain_id=hypervisor_for(vm.host).domain_id(vm.name),
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
