"""The benchmark's console stand-in: a TCP server speaking enough RFB to stand for QEMU's VNC
server, run in its own process.

Each connection gets QEMU's handshake: RFB 3.8, VNC authentication against the password given
on the command line, ClientInit, then a ServerInit. The client's first message after that is a
ClientCutText carrying one command (a command byte, maybe a count), which sets what follows;
everything the client sends afterwards is well-formed RFB too (ClientCutText messages), so the
portal's proxy, which follows every client message, passes it as it would a real client's:
  B  stream 64 KiB chunks as fast as the connection takes them
  E  echo everything
  S  sink: an 8-byte big-endian count follows; reply b"K" once that many more bytes arrived
  P  stream 1 KiB chunks at 1 Mbit/s (a shared ticker paces every such session)
  I  idle
Usage: python -m bench.backend PORT PASSWORD
"""

from __future__ import annotations

import asyncio
import os
import struct
import sys

from bench.rfb import SERVER_INIT, vnc_des_response

CHUNK = bytes(64 * 1024)
FRAME = bytes(1024)
PACED_FRAMES_PER_SECOND = 1_000_000 / 8 / 1024  # 1 Mbit/s in 1 KiB frames
PASSWORD = ""


class Console(asyncio.Protocol):
    paced: set[Console] = set()

    def connection_made(self, transport):
        self.transport = transport
        self.mode = None
        self.state = "version"
        self.sink_left = None
        self.buffer = bytearray()
        self.paused = False
        self.challenge = os.urandom(16)
        transport.write(b"RFB 003.008\n")

    def data_received(self, data):
        if self.mode is None:
            self.buffer += data
            if not self._handshake():
                return
            data = bytes(self.buffer)
            self.buffer.clear()
            if self.mode == "B":
                self.stream()
            elif self.mode == "P":
                Console.paced.add(self)
        if self.mode == "E":
            self.transport.write(data)
        elif self.mode == "S":
            self.sink_left -= len(data)
            if self.sink_left <= 0:
                self.transport.write(b"K")
                self.sink_left = None

    def _take(self, n: int) -> bytes | None:
        if len(self.buffer) < n:
            return None
        out = bytes(self.buffer[:n])
        del self.buffer[:n]
        return out

    def _handshake(self) -> bool:
        """QEMU's side, then the command; True once the mode is set."""
        while self.mode is None:
            if self.state == "version":
                if self._take(12) is None:
                    return False
                self.transport.write(bytes([1, 2]))  # VNC authentication only
                self.state = "type"
            elif self.state == "type":
                if self._take(1) is None:
                    return False
                self.transport.write(self.challenge)
                self.state = "response"
            elif self.state == "response":
                response = self._take(16)
                if response is None:
                    return False
                if response != vnc_des_response(PASSWORD, self.challenge):
                    self.transport.write(struct.pack(">II", 1, 6) + b"denied")
                    self.transport.close()
                    return False
                self.transport.write(bytes(4))
                self.state = "init"
            elif self.state == "init":
                if self._take(1) is None:
                    return False
                self.transport.write(SERVER_INIT)
                self.state = "command"
            else:
                if len(self.buffer) < 8:
                    return False
                length = struct.unpack_from(">I", self.buffer, 4)[0]
                message = self._take(8 + length)
                if message is None:
                    return False
                command = message[8:]
                self.mode = chr(command[0])
                if self.mode == "S":
                    self.sink_left = int.from_bytes(command[1:9], "big")
        return True

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
    PASSWORD = sys.argv[2]
    asyncio.run(main(int(sys.argv[1])))
