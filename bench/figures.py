"""One measurement per function; each returns plain numbers for one path."""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import time

from bench.paths import Path
from bench.rfb import cut, rfb_open
from bench.setup import ROOT, World
from bench.wsclient import Flow

ONE_MBIT = 1_000_000
# What the clients send the console: well-formed RFB (the portal's proxy follows every client
# message), 1 KiB and 64 B on the wire.
MESSAGE_1K = cut(bytes(1024 - 8))
MESSAGE_64 = cut(bytes(64 - 8))


async def _open(path: Path, world: World, command: bytes):
    token = world.ticket_tokens(1, path)[0] if path.ws_path else None
    conn = await path.connect(token)
    await rfb_open(conn, command, path.password)
    return conn


async def bulk(path: Path, world: World, seconds: float) -> dict:
    """Server-to-client throughput (the backend writes 64 KiB chunks), and proxy CPU per GB."""
    conn = await _open(path, world, b"B")
    conn.discard = True
    await asyncio.sleep(min(0.3, seconds / 3))  # let TCP windows open
    cpu0 = path.cpu_seconds() if path.process else 0.0
    t0, r0 = time.perf_counter(), conn.received
    await asyncio.sleep(seconds)
    t1, r1 = time.perf_counter(), conn.received
    cpu1 = path.cpu_seconds() if path.process else 0.0
    conn.close()
    gigabytes = (r1 - r0) / 1e9
    return {
        "bulk_gbit_s": (r1 - r0) * 8 / (t1 - t0) / 1e9,
        "cpu_s_per_gb": (cpu1 - cpu0) / gigabytes if path.process and gigabytes else None,
    }


async def stalled_client(path: Path, world: World, seconds: float) -> dict:
    """Growth of the proxy's memory (RSS) while one client asks for a flood and stops reading:
    without backpressure the proxy buffers all of it (the attack review saw Daphne grow by
    111 MiB in 15 s); with it, the flood waits in socket buffers."""
    if path.process is None:
        return {"stalled_growth_mib": None}
    conn = await _open(path, world, b"B")
    conn.transport.pause_reading()  # a client that never reads again
    await asyncio.sleep(1.0)  # socket buffers fill
    before = path.rss()
    peak = before
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        await asyncio.sleep(0.25)
        peak = max(peak, path.rss())
    conn.close()
    return {"stalled_growth_mib": (peak - before) / 2**20}


async def message_rate(path: Path, world: World, count: int) -> dict:
    """1 KiB messages per second, client to console (one WebSocket frame each)."""
    conn = await _open(path, world, b"S" + (count * 1024).to_bytes(8, "big"))
    one = MESSAGE_1K
    if path.ws_path:
        from bench.wsclient import frame

        one = frame(one)
    flow = Flow(conn)
    t0 = time.perf_counter()
    write = conn.transport.write
    for i in range(count):
        write(one)
        if i % 256 == 255:
            await flow.drain()
    await conn.read(1)
    elapsed = time.perf_counter() - t0
    conn.close()
    return {"msg_rate_1k": count / elapsed}


async def round_trips(path: Path, world: World, samples: int) -> list[float]:
    """64-byte echo round trips, in seconds."""
    conn = await _open(path, world, b"E")
    message = MESSAGE_64
    for _ in range(min(50, samples)):  # warm up
        conn.send(message)
        await conn.read(64)
    times = []
    for _ in range(samples):
        t0 = time.perf_counter()
        conn.send(message)
        await conn.read(64)
        times.append(time.perf_counter() - t0)
    conn.close()
    return times


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


async def echo(path: Path, world: World, samples: int) -> dict:
    times = await round_trips(path, world, samples)
    return {"rtt_p50_ms": percentile(times, 50) * 1e3, "rtt_p99_ms": percentile(times, 99) * 1e3}


class Load:
    """N background sessions streaming 1 Mbit/s each, from a process of their own."""

    def __init__(self, path: Path, world: World, sessions: int) -> None:
        tokens = world.ticket_tokens(sessions, path) if path.ws_path else [None] * sessions
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.load"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.process.stdin.write(json.dumps(path.load_config(tokens)) + "\n")
        self.process.stdin.flush()

    async def ready(self) -> None:
        line = await asyncio.to_thread(self.process.stdout.readline)
        if line.strip() != "ready":
            raise RuntimeError(f"load did not start: {line!r}")
        await asyncio.sleep(0.5)
        self._say("mark")
        self.marked_at = time.perf_counter()

    def _say(self, word: str) -> str:
        self.process.stdin.write(word + "\n")
        self.process.stdin.flush()
        return self.process.stdout.readline()

    async def stop(self, window: float = 1.0) -> float:
        """The rate each session achieved since ready() (over `window` s at least), in bit/s."""
        return (await self.stop_report(window))["bits_per_session"]

    async def stop_report(self, window: float = 1.0) -> dict:
        """bits_per_session, and how many sessions the proxy dropped."""
        await asyncio.sleep(max(0.0, self.marked_at + window - time.perf_counter()))
        result = json.loads(self._say("stop"))
        self.process.wait(30)
        return result


async def echo_under_load(path: Path, world: World, samples: int, sessions: int) -> dict:
    load = Load(path, world, sessions)
    await load.ready()
    times = await round_trips(path, world, samples)
    await load.stop()
    return {
        "loaded_rtt_p50_ms": percentile(times, 50) * 1e3,
        "loaded_rtt_p99_ms": percentile(times, 99) * 1e3,
    }


async def setup_time(path: Path, world: World, count: int) -> dict:
    """Ticket issue + WebSocket handshake + first byte from the console."""
    times = []
    for _ in range(count):
        t0 = time.perf_counter()
        token = world.ticket_tokens(1, path)[0] if path.ws_path else None
        conn = await path.connect(token)
        await conn.read(1)
        times.append(time.perf_counter() - t0)
        conn.close()
        await asyncio.sleep(0.002)
    return {"setup_p50_ms": statistics.median(times) * 1e3}


async def idle_memory(path: Path, world: World, sessions: int) -> dict:
    """Growth of the proxy's memory (PSS) per idle session, over `sessions` of them."""
    if path.process is None:
        return {"idle_kib_per_session": None}
    tokens = world.ticket_tokens(sessions, path)
    await asyncio.sleep(0.5)
    before = path.memory()
    limit = asyncio.Semaphore(20)

    async def one(token):
        async with limit:
            try:
                conn = await path.connect(token)
                await rfb_open(conn, b"I", path.password)
            except ConnectionError:
                return None  # counted below; websockify drops a few when forking 1000 times
            return conn

    conns = [conn for conn in await asyncio.gather(*(one(t) for t in tokens)) if conn is not None]
    await asyncio.sleep(1.0)
    after = path.memory()
    for conn in conns:
        conn.close()
    await asyncio.sleep(1.0)
    return {"idle_kib_per_session": (after - before) / max(1, len(conns)) / 1024, "idle_sessions": len(conns)}


async def max_sessions(path: Path, world: World, ladder: list[int], samples: int) -> dict:
    """The most 1 Mbit/s sessions one proxy carries with p99 round trip under 50 ms."""
    best, last_p99 = 0, None
    for sessions in ladder:
        load = Load(path, world, sessions)
        try:
            await asyncio.wait_for(load.ready(), 120)
            times = await round_trips(path, world, samples)
            achieved = await load.stop()
        except (RuntimeError, asyncio.TimeoutError, ConnectionError):
            load.process.kill()
            break
        last_p99 = percentile(times, 99) * 1e3
        if last_p99 >= 50 or achieved < 0.9 * ONE_MBIT:
            break
        best = sessions
        await asyncio.sleep(1.0)
    return {"max_sessions": best, "max_sessions_capped": best == ladder[-1]}
