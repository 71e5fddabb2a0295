"""`make bench` runs: a short run prints the table and gives every figure for every path.

The benchmark measures; it is not a test of speed, so nothing here looks at the numbers.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.browser, pytest.mark.hypervisor]

PATHS = {"raw TCP", "websockify", "consoleproxy", "Daphne", "Daphne, recorded", "uvicorn"}
PROXIES = PATHS - {"raw TCP"}


def test_short_benchmark_runs(tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--short", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "bulk server->client" in result.stdout and "xws" in result.stdout
    figures = json.loads(out.read_text())["figures"]
    for key in (
        "bulk_gbit_s",
        "msg_rate_1k",
        "rtt_p50_ms",
        "rtt_p99_ms",
        "loaded_rtt_p50_ms",
        "loaded_rtt_p99_ms",
        "setup_p50_ms",
        "max_sessions",
    ):
        assert set(figures[key]) == PATHS, key
    for key in ("idle_kib_per_session", "cpu_s_per_gb", "stalled_growth_mib"):
        assert set(figures[key]) == PROXIES, key
    # A bound, not a speed: a client that stops reading a flood must not grow any server by more
    # than a few MiB (without backpressure Daphne grew by ~30 MiB in 4 s: ~15 MiB in the short
    # run's 2 s).
    for name, entry in figures["stalled_growth_mib"].items():
        assert entry["median"] < 8, (name, entry)
    for key in ("ttff_spice_ms", "ttff_vnc_ms", "ttff_spice_warm_ms", "ttff_vnc_warm_ms"):
        assert set(figures[key]) == {"Daphne", "uvicorn", "stock page via websockify"}
        assert "xstock" in result.stdout  # printed as a ratio, not judged
    assert f"{figures['bulk_gbit_s']['Daphne']['vs_websockify']:.2f}xws" in result.stdout
    assert "xunrec" in result.stdout and "recording, the same Daphne to a recorded VM" in result.stdout
    recorded = json.loads(out.read_text())["recorded"]
    assert recorded["bytes"] > 1 << 20  # the recorded path records
    assert set(recorded["mib_per_minute"]) == {"vnc", "spice", "serial"}
    assert "a recorded minute of the demo guest's console" in result.stdout


def test_short_soak_drops_nothing_and_keeps_memory_flat(tmp_path):
    out = tmp_path / "soak.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--soak",
            "--sessions",
            "50",
            "--minutes",
            "0.34",
            "--json",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    soak = json.loads(out.read_text())
    assert soak["dropped"] == 0 and len(soak["intervals"]) >= 3
    assert soak["bits_per_session"] > 0.5e6  # the sessions did stream
    # Flat: no growth with time once the sessions are open (a leak per message would show).
    assert soak["rss_end_mib"] - soak["rss_start_mib"] < 16


def test_only_the_stock_spice_pages_ticket_bug_repeats_a_load():
    """The stock spice-html5's undecryptable password (bench.browser.StockTicketBug) repeats that
    load, counted; on the portal's pages, or past the limit, it is a failure like any other."""
    from bench.browser import STOCK_TICKET_TRIES, StockTicketBug, _Loads

    def failing(times: int):
        calls = []

        def load() -> float:
            calls.append(1)
            if len(calls) <= times:
                raise StockTicketBug("QEMU refused the password")
            return 123.0

        return load

    stock = _Loads(browser=None, vm=None, closed=lambda: None, stock=True)
    assert stock._repeated(failing(2)) == 123.0
    assert stock.ticket_bugs == 2
    with pytest.raises(StockTicketBug):
        stock._repeated(failing(STOCK_TICKET_TRIES))
    portal = _Loads(browser=None, vm=None, closed=lambda: None)
    with pytest.raises(StockTicketBug):
        portal._repeated(failing(1))
    assert portal.ticket_bugs == 0
