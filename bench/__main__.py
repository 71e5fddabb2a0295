"""make bench [ARGS="--short --json out.json"]: the console proxy benchmark.

Every path is measured in the same run, interleaved (the order rotates each round), repeated;
the table gives the median with min and max, and each figure as a ratio to websockify and to
raw TCP measured in that run. In Chromium, the portal's console pages are timed against the
stock spice-html5 and noVNC pages served as static files and connecting through websockify,
each cold (an empty cache) and warm (loaded once before). Everything listens on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import time

from bench import figures
from bench.baseline import LANDED
from bench.paths import paths_start
from bench.setup import world_create

METRICS = [
    # key, label, unit, higher is better
    ("bulk_gbit_s", "bulk server->client", "Gbit/s", True),
    ("msg_rate_1k", "1 KiB messages client->console", "msg/s", True),
    ("rtt_p50_ms", "64 B echo RTT p50, idle", "ms", False),
    ("rtt_p99_ms", "64 B echo RTT p99, idle", "ms", False),
    ("loaded_rtt_p50_ms", "RTT p50, 100 x 1 Mbit/s load", "ms", False),
    ("loaded_rtt_p99_ms", "RTT p99, 100 x 1 Mbit/s load", "ms", False),
    ("setup_p50_ms", "ticket + handshake + 1st byte p50", "ms", False),
    ("idle_kib_per_session", "memory per idle session", "KiB", False),
    ("idle_sessions", "idle sessions held at once (of N asked)", "sessions", True),
    ("cpu_s_per_gb", "CPU per GB relayed", "s/GB", False),
    ("stalled_growth_mib", "memory growth, client stops reading", "MiB", False),
    ("max_sessions", "1 Mbit/s sessions, p99 < 50 ms", "sessions", True),
    ("ttff_spice_ms", "browser, cold: page -> 1st frame, SPICE", "ms", False),
    ("ttff_vnc_ms", "browser, cold: page -> 1st frame, VNC", "ms", False),
    ("ttff_spice_warm_ms", "browser, warm: page -> 1st frame, SPICE", "ms", False),
    ("ttff_vnc_warm_ms", "browser, warm: page -> 1st frame, VNC", "ms", False),
]
RECORDED = "Daphne, recorded"  # bench/paths.py: Daphne to a VM whose consoles are recorded
BROWSER_KEYS = {"ttff_spice_ms", "ttff_vnc_ms", "ttff_spice_warm_ms", "ttff_vnc_warm_ms"}

FULL = dict(
    repeats=5,
    bulk_seconds=2.0,
    messages=50_000,
    echo_samples=2000,
    load_sessions=100,
    load_samples=1000,
    setups=100,
    idle_sessions=1000,
    ladder=[100, 200, 400, 700, 1000, 1500],
    ladder_samples=500,
    browser_repeats=7,
    stalled_seconds=15,
    recorded_seconds=30,
    vm_list=True,  # the VM list with 1000 VMs (bench/vmlist.py)
)
SHORT = dict(
    repeats=1,
    bulk_seconds=0.3,
    messages=2000,
    echo_samples=100,
    load_sessions=10,
    load_samples=100,
    setups=10,
    idle_sessions=20,
    ladder=[5, 10],
    ladder_samples=50,
    browser_repeats=1,
    stalled_seconds=2,
    recorded_seconds=2,
    vm_list=False,  # a full run only: make test has its own list tests
)


async def measure(
    config: dict, with_browser: bool, only_browser: bool = False, baseline: str | None = None
) -> dict:
    world = world_create()
    samples: dict[str, dict[str, list]] = {key: {} for key, *_ in METRICS}
    try:
        paths = paths_start(world, baseline)

        def add(path, result):
            for key, value in result.items():
                if key in samples and value is not None:
                    samples[key].setdefault(path.name, []).append(value)

        rounds = [
            lambda p: figures.bulk(p, world, config["bulk_seconds"]),
            lambda p: figures.message_rate(p, world, config["messages"]),
            lambda p: figures.echo(p, world, config["echo_samples"]),
            lambda p: figures.echo_under_load(p, world, config["load_samples"], config["load_sessions"]),
            lambda p: figures.setup_time(p, world, config["setups"]),
        ]
        for repeat in range(0 if only_browser else config["repeats"]):
            order = paths[repeat % len(paths) :] + paths[: repeat % len(paths)]
            for measure_one in rounds:
                for path in order:
                    add(path, await measure_one(path))
            print(f"round {repeat + 1}/{config['repeats']} done", file=sys.stderr)
        for path in [] if only_browser else paths:
            add(path, await figures.idle_memory(path, world, config["idle_sessions"]))
        for path in [] if only_browser else paths:
            add(path, await figures.stalled_client(path, world, config["stalled_seconds"]))
        for path in [] if only_browser else paths:
            result = await figures.max_sessions(path, world, config["ladder"], config["ladder_samples"])
            add(path, {"max_sessions": result["max_sessions"]})
            if result["max_sessions_capped"]:
                samples.setdefault("capped", {})[path.name] = True
        if with_browser:
            from bench.browser import first_frames

            frames = await asyncio.to_thread(first_frames, world, config["browser_repeats"], paths)
            for name, results in frames.items():
                for key, values in results.items():
                    samples[key].setdefault(name, []).extend(values)
        samples["recorded"] = {"bytes": world.recorded_bytes()}
        if with_browser:
            from bench.recording import recorded_minutes

            daphne = next(p for p in paths if p.name == "Daphne")
            samples["recorded"]["mib_per_minute"] = await asyncio.to_thread(
                recorded_minutes, world, daphne.port, config["recorded_seconds"]
            )
            from bench.vmlist import list_figures

            repeats = config["browser_repeats"] if config["vm_list"] else 0
            samples["vm_list"] = await asyncio.to_thread(list_figures, world, daphne.port, repeats)
    finally:
        world.stop()
    return samples


def summarize(samples: dict) -> dict:
    summary = {}
    for key, _label, _unit, _higher in METRICS:
        per_path = {}
        for name, values in samples.get(key, {}).items():
            per_path[name] = {
                "median": statistics.median(values),
                "min": min(values),
                "max": max(values),
                "samples": values,
            }
        landed = next((name for name in per_path if name.startswith("Daphne, landed")), None)
        references = (("websockify", "vs_websockify"), ("raw TCP", "vs_raw_tcp"))
        if landed is not None:
            references += ((landed, "vs_landed"),)
        if key in BROWSER_KEYS:
            # The portal's console page against the stock client page, each cold or warm.
            from bench.browser import STOCK

            references = ((STOCK, "vs_stock"),) + ((landed, "vs_landed"),) * (landed is not None)
        for reference, field in references:
            if reference in per_path and per_path[reference]["median"]:
                for entry in per_path.values():
                    entry[field] = entry["median"] / per_path[reference]["median"]
        recorded, unrecorded = per_path.get(RECORDED), per_path.get("Daphne")
        if recorded and unrecorded and unrecorded["median"]:
            recorded["vs_unrecorded"] = recorded["median"] / unrecorded["median"]
        summary[key] = per_path
    return summary


def recording_cost(summary: dict) -> str:
    """What recording costs on the relay path: the recorded path against Daphne, in one run."""
    parts = []
    for key, label in (("bulk_gbit_s", "bulk"), ("msg_rate_1k", "message rate"), ("rtt_p50_ms", "RTT p50")):
        entry = (summary.get(key) or {}).get(RECORDED)
        if entry and "vs_unrecorded" in entry:
            parts.append(f"{label} {entry['vs_unrecorded']:.2f}x")
    return "recording, the same Daphne to a recorded VM (1.00x: free): " + ", ".join(parts) if parts else ""


def table(summary: dict, capped: dict) -> str:
    names = []
    for per_path in summary.values():
        names += [n for n in per_path if n not in names]
    lines = [f"{'figure':40} " + " ".join(f"{n:>34}" for n in names)]
    for key, label, unit, higher in METRICS:
        per_path = summary.get(key) or {}
        if not per_path:
            continue
        cells = []
        for name in names:
            entry = per_path.get(name)
            if entry is None:
                cells.append(f"{'-':>34}")
                continue
            text = f"{entry['median']:.3g}"
            if key == "max_sessions" and capped.get(name):
                text = ">=" + text
            if len(entry["samples"]) > 1:
                text += f" ({entry['min']:.3g}-{entry['max']:.3g})"
            ratios = []
            if "vs_websockify" in entry and name != "websockify":
                ratios.append(f"{entry['vs_websockify']:.2f}xws")
            if "vs_raw_tcp" in entry and name != "raw TCP":
                ratios.append(f"{entry['vs_raw_tcp']:.2f}xraw")
            if "vs_stock" in entry and "stock" not in name:
                ratios.append(f"{entry['vs_stock']:.2f}xstock")
            if "vs_landed" in entry and name == "Daphne":
                ratios.append(f"{entry['vs_landed']:.2f}xlanded")
            if "vs_unrecorded" in entry:
                ratios.append(f"{entry['vs_unrecorded']:.2f}xunrec")
            cells.append(f"{text + ' ' + ' '.join(ratios):>34}")
        lines.append(
            f"{label + ' [' + unit + (', more' if higher else ', less') + ' is better]':40} "
            + " ".join(cells)
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="make bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--short", action="store_true", help="a quick run with small counts (what make test runs)"
    )
    parser.add_argument(
        "--json", metavar="FILE", help="also write the figures as JSON to FILE ('-' for stdout)"
    )
    parser.add_argument(
        "--no-browser", action="store_true", help="skip the browser time-to-first-frame figures"
    )
    parser.add_argument("--browser", action="store_true", help="only the browser time-to-first-frame figures")
    parser.add_argument(
        "--soak",
        action="store_true",
        help="instead: SESSIONS x 1 Mbit/s for MINUTES through Daphne (memory, round trip, errors)",
    )
    parser.add_argument(
        "--scale",
        action="store_true",
        help="instead: SSH tunnel vs direct, 1 vs 2 workers behind HAProxy (needs root, PostgreSQL, Redis)",
    )
    parser.add_argument(
        "--baseline",
        nargs="?",
        const=LANDED,
        metavar="REV",
        help=f"also measure the portal as of git revision REV (default {LANDED}, the landed version "
        "before the console pipeline) in the same run",
    )
    parser.add_argument("--sessions", type=int, default=500, help="soak sessions (default 500)")
    parser.add_argument("--minutes", type=float, default=10, help="soak length (default 10)")
    args = parser.parse_args()
    if args.scale:
        from bench.scale import scale, scale_table

        result = asyncio.run(scale(args.short))
        print(scale_table(result))
        if args.json:
            with open(args.json, "w") as handle:
                json.dump({k: v for k, v in result.items()}, handle, indent=2, default=str)
        return
    if args.soak:
        from bench.soak import soak, soak_table

        interval = 60 if args.minutes >= 2 else max(1.0, args.minutes * 60 / 4)
        result = asyncio.run(soak(args.sessions, args.minutes * 60, interval))
        print(soak_table(result))
        if args.json:
            with open(args.json, "w") as handle:
                json.dump(result, handle, indent=2)
        sys.exit(1 if result["dropped"] else 0)
    config = SHORT if args.short else FULL
    started = time.time()
    samples = asyncio.run(
        measure(config, with_browser=not args.no_browser, only_browser=args.browser, baseline=args.baseline)
    )
    capped = samples.pop("capped", {})
    vm_list = samples.pop("vm_list", {})
    recorded = samples.pop("recorded", {})
    summary = summarize(samples)
    header = (
        f"console proxy benchmark ({'short' if args.short else 'full'} run, {platform.node()}, "
        f"{time.strftime('%Y-%m-%d %H:%M')}, {time.time() - started:.0f} s); medians (min-max), "
        "ratios to stock websockify (xws) and raw TCP (xraw), Daphne's to the landed version's "
        "(xlanded), the recorded path's to Daphne's (xunrec); browser pages to the stock page (xstock)"
    )
    print(header)
    print(table(summary, capped))
    if cost := recording_cost(summary):
        print(f"{cost} ({recorded.get('bytes', 0) / 2**20:.0f} MiB recorded)")
    if per_minute := recorded.get("mib_per_minute"):
        print(
            "a recorded minute of the demo guest's console, busy (a listing scrolling), in Chromium: "
            + ", ".join(f"{protocol} {mib:.2f} MiB" for protocol, mib in per_minute.items())
        )
    from bench.vmlist import list_lines

    for line in list_lines(vm_list):
        print(line)
    if args.json:
        document = json.dumps(
            {
                "config": config,
                "capped": capped,
                "recorded": recorded,
                "vm_list": vm_list,
                "figures": summary,
            },
            indent=2,
        )
        if args.json == "-":
            print(document)
        else:
            with open(args.json, "w") as handle:
                handle.write(document)


if __name__ == "__main__":
    main()
