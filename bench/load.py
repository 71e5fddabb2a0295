"""Background load for the benchmark, in its own process: N sessions each streaming 1 Mbit/s.

Reads one JSON line (a path's load config) on stdin, opens the sessions, prints "ready", then
answers "mark" (start counting) and "stop" (print the achieved rate per session as JSON, exit).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from bench.rfb import rfb_open
from bench.wsclient import open_conn


async def main() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    config = json.loads(await reader.readline())
    limit = asyncio.Semaphore(64)

    async def session(token):
        async with limit:
            path = None if config["ws_path"] is None else config["ws_path"].format(token=token)
            conn = await open_conn(
                "127.0.0.1", config["port"], path=path, origin=config["origin"], cookie=config["cookie"]
            )
            await rfb_open(conn, b"P", config["password"])
            conn.discard = True
            return conn

    conns = await asyncio.gather(*(session(t) for t in config["tokens"]))
    print("ready", flush=True)
    marked_at, marked = time.perf_counter(), 0
    while line := (await reader.readline()).strip():
        if line == b"mark":
            marked_at, marked = time.perf_counter(), sum(c.received for c in conns)
            print("marked", flush=True)
        elif line == b"stop":
            break
    elapsed = time.perf_counter() - marked_at
    received = sum(c.received for c in conns) - marked
    # A session the proxy closed before we stopped is an error of the run.
    dropped = sum(1 for c in conns if c.closed.done())
    print(
        json.dumps({"bits_per_session": received * 8 / elapsed / max(1, len(conns)), "dropped": dropped}),
        flush=True,
    )
    for conn in conns:
        conn.close()


if __name__ == "__main__":
    asyncio.run(main())
