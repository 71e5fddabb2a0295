"""Helpers for proxy tests: a console stand-in and tickets pointing at it."""

import asyncio
import secrets
from datetime import timedelta

from django.utils import timezone

from console.models import ConsoleTicket
from console.tickets import token_hash


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


def make_ticket(user, vm, port, *, seconds=60, max_connections=8, protocol="vnc"):
    token = secrets.token_urlsafe(32)
    ConsoleTicket.objects.create(
        token_hash=token_hash(token),
        user=user,
        vm=vm,
        protocol=protocol,
        address="127.0.0.1",
        port=port,
        expires_at=timezone.now() + timedelta(seconds=seconds),
        max_connections=max_connections,
    )
    return token
