"""Prometheus metrics, with the official client, in multi-process mode when several processes
serve the portal (PROMETHEUS_MULTIPROC_DIR, set by bin/cluster): one scrape of any worker
reports every worker's and proxy's counters.

Counters and histograms only, written by the processes that see the events: a leaf, which
imports nothing of the project. What is true now (sessions open, hosts up) is read at scrape
time from the database and the hosts by portal/health.py, so it is right across workers,
proxies and websockify's short-lived children alike.
"""

from __future__ import annotations

from django.conf import settings
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.registry import REGISTRY, Collector

SESSIONS_STARTED = Counter(
    "console_sessions_started_total", "Console sessions opened.", ["protocol", "host", "path"]
)
SESSIONS_ENDED = Counter("console_sessions_ended_total", "Console sessions ended, by reason.", ["reason"])
BYTES = Counter("console_bytes_total", "Bytes relayed between clients and consoles.", ["direction"])
CLIPBOARD_BLOCKED = Counter(
    "console_clipboard_blocked_bytes_total", "Clipboard text of clients kept from VMs (console.clipboard)."
)
REFUSALS = Counter("console_ticket_refusals_total", "Console connections refused, by reason.", ["reason"])
FIRST_BYTE = Histogram(
    "console_first_byte_seconds",
    "From the WebSocket's opening to the console's first byte to the client.",
    ["protocol"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
LIBVIRT_CALL = Histogram(
    "libvirt_call_seconds",
    "libvirt calls, by host.",
    ["host"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 15),
)


def metrics_text(now: Collector | None = None) -> bytes:
    """Every metric of every process, in Prometheus' text format, and `now`'s, read at scrape
    time (portal/health.py: sessions open, hosts up)."""
    if settings.PROMETHEUS_MULTIPROC_DIR:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, settings.PROMETHEUS_MULTIPROC_DIR)
    else:
        registry = REGISTRY
    text = generate_latest(registry)
    if now is not None:
        extra = CollectorRegistry()
        extra.register(now)
        text += generate_latest(extra)
    return text
