"""make bench ARGS=--soak: many console sessions streaming for a long time through the default
server (Daphne, as `make run` serves it), with the memory and round trip it keeps.

N sessions (default 500) each receive 1 Mbit/s from the console stand-in for M minutes
(default 10), opened through real tickets like the browser's; one more session measures the
64-byte round trip ten times a second. Every interval it prints the server's RSS and that
interval's round-trip p50/p99; at the end, the sessions the server dropped (must be none) and
RSS at start, peak and end.
"""

from __future__ import annotations

import asyncio
import sys
import time

from bench.figures import MESSAGE_64, Load, percentile
from bench.paths import paths_start
from bench.rfb import rfb_open
from bench.setup import world_create


async def soak(sessions: int, seconds: float, interval: float) -> dict:
    world = world_create()
    try:
        paths = paths_start(world)
        daphne = next(path for path in paths if path.name == "Daphne")
        load = Load(daphne, world, sessions)
        await load.ready()
        probe = await daphne.connect(world.ticket_tokens(1, daphne)[0])
        await rfb_open(probe, b"E", daphne.password)
        start_rss = peak_rss = daphne.rss()
        rows = []
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            times = []
            window_end = min(started + seconds, time.perf_counter() + interval)
            while time.perf_counter() < window_end:
                t0 = time.perf_counter()
                probe.send(MESSAGE_64)
                await probe.read(64)
                times.append(time.perf_counter() - t0)
                await asyncio.sleep(0.1)
            rss = daphne.rss()
            peak_rss = max(peak_rss, rss)
            row = {
                "at_s": round(time.perf_counter() - started),
                "rss_mib": rss / 2**20,
                "rtt_p50_ms": percentile(times, 50) * 1e3,
                "rtt_p99_ms": percentile(times, 99) * 1e3,
            }
            rows.append(row)
            print(
                f"  {row['at_s']:>5} s  RSS {row['rss_mib']:7.1f} MiB  "
                f"RTT p50 {row['rtt_p50_ms']:6.2f} ms  p99 {row['rtt_p99_ms']:6.2f} ms",
                file=sys.stderr,
                flush=True,
            )
        report = await load.stop_report()
        probe.close()
        end_rss = daphne.rss()
        return {
            "sessions": sessions,
            "seconds": seconds,
            "bits_per_session": report["bits_per_session"],
            "dropped": report["dropped"],
            "rss_start_mib": start_rss / 2**20,
            "rss_peak_mib": peak_rss / 2**20,
            "rss_end_mib": end_rss / 2**20,
            "intervals": rows,
        }
    finally:
        world.stop()


def soak_table(result: dict) -> str:
    lines = [
        f"soak: {result['sessions']} sessions x 1 Mbit/s for {result['seconds']:.0f} s through Daphne "
        f"(make run's server); achieved {result['bits_per_session'] / 1e6:.3f} Mbit/s per session, "
        f"{result['dropped']} dropped",
        f"RSS start {result['rss_start_mib']:.1f} MiB, peak {result['rss_peak_mib']:.1f} MiB, "
        f"end {result['rss_end_mib']:.1f} MiB",
        f"{'at':>7} {'RSS MiB':>9} {'RTT p50 ms':>11} {'RTT p99 ms':>11}",
    ]
    for row in result["intervals"]:
        lines.append(
            f"{row['at_s']:>6}s {row['rss_mib']:>9.1f} {row['rtt_p50_ms']:>11.2f} {row['rtt_p99_ms']:>11.2f}"
        )
    return "\n".join(lines)
