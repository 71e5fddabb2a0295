"""The benchmark's console stand-in: a TCP server, run in its own process.

On connect it greets with 12 bytes (like VNC's "RFB 003.008\\n"), then obeys one command byte:
  B  stream 64 KiB chunks as fast as the connection takes them
  E  echo everything
  S  sink: 8-byte big-endian count follows; reply b"K" once that many more bytes arrived
  P  stream 1 KiB chunks at 1 Mbit/s (a shared ticker paces every such session)
  I  idle
Usage: python -m bench.backend PORT
"""

from __future__ import annotations

import asyncio
import sys

GREETING = b"RFB 003.008\n"
CHUNK = bytes(64 * 1024)
FRAME = bytes(1024)
PACED_FRAMES_PER_SECOND = 1_000_000 / 8 / 1024  # 1 Mbit/s in 1 KiB frames


class Console(asyncio.Protocol):
    paced: set[Console] = set()

    def connection_made(self, transport):
        self.transport = transport
        self.mode = None
        self.sink_left = None
        self.buffer = bytearray()
        self.paused = False
        transport.write(GREETING)

    def data_received(self, data):
        if self.mode is None:
            self.buffer += data
            self.mode = chr(self.buffer[0])
            data = bytes(self.buffer[1:])
            self.buffer.clear()
            if self.mode == "B":
                self.stream()
            elif self.mode == "P":
                Console.paced.add(self)
        if self.mode == "E":
            self.transport.write(data)
        elif self.mode == "S":
            if self.sink_left is None:
                self.buffer += data
                if len(self.buffer) < 8:
                    return
                self.sink_left = int.from_bytes(self.buffer[:8], "big")
                data = bytes(self.buffer[8:])
            self.sink_left -= len(data)
            if self.sink_left <= 0:
                self.transport.write(b"K")
                self.sink_left = None
                self.buffer.clear()

    def stream(self):
        while not self.paused and not self.transport.is_closing():
            self.transport.write(CHUNK)

    def pause_writing(self):
        self.paused = True

    def resume_writing(self):
        self.paused = False
        if self.mode == "B":
            self.stream()

    def connection_lost(self, exc):
        Console.paced.discard(self)


async def pace() -> None:
    """Every paced session gets one 1 KiB frame per 1/122 s."""
    loop = asyncio.get_running_loop()
    interval = 1 / PACED_FRAMES_PER_SECOND
    next_tick = loop.time()
    while True:
        next_tick += interval
        for console in list(Console.paced):
            if not console.paused:
                console.transport.write(FRAME)
        await asyncio.sleep(max(0.0, next_tick - loop.time()))


async def main(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Console, "127.0.0.1", port, backlog=4096)
    loop.create_task(pace())
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
