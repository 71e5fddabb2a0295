"""Prometheus metrics, with the official client, in multi-process mode when several processes
serve the portal (PROMETHEUS_MULTIPROC_DIR, set by bin/cluster): one scrape of any worker
reports every worker's and proxy's counters.

Counters and histograms are written by the processes that see the events. What is true now —
sessions open, hosts up — is read at scrape time from the database and the hosts themselves,
so it is right across workers, proxies and websockify's short-lived children alike.
"""

from __future__ import annotations

from collections.abc import Iterator

from django.conf import settings
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
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

# End reasons as labels: a bounded set, and never a person's name.
_KNOWN_REASONS = {
    "client closed",
    "console closed",
    "worker stopped",
    "worker lost",
    "serial console busy",
    "console unavailable",
    "closed",
    "downloaded",
}


def reason_label(reason: str) -> str:
    from console.tickets import Refusal

    if reason in _KNOWN_REASONS:
        return reason
    for refusal in Refusal:
        if reason == refusal.message:
            return refusal.name.lower()
    if "took over the serial console" in reason or "in another window" in reason:
        return "taken_over"
    if reason.startswith("the VM stopped") or "closed its serial console" in reason:
        return "vm_stopped"
    return "other"


class _NowCollector(Collector):
    """Sessions open and hosts up, as they are at scrape time."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from django.db.models import Count

        from console.hosts import host_checks
        from console.models import ConsoleSession, Host
        from console.sessions import open_sessions

        open_now = GaugeMetricFamily(
            "console_sessions_open", "Console sessions open now.", labels=["protocol", "host", "path"]
        )
        rows = (
            open_sessions(ConsoleSession.objects.all())
            .values("protocol", "vm__host__name", "via")
            .annotate(n=Count("id"))
        )
        for row in rows:
            open_now.add_metric([row["protocol"], row["vm__host__name"] or "", row["via"]], row["n"])
        yield open_now
        hosts = list(Host.objects.all())
        up = GaugeMetricFamily("libvirt_host_up", "Whether the host's libvirt answers.", labels=["host"])
        health = host_checks(hosts)
        for host in hosts:
            up.add_metric([host.name], 1 if health[host.pk].ok else 0)
        yield up


def metrics_text() -> bytes:
    """Every metric of every process, in Prometheus' text format."""
    if settings.PROMETHEUS_MULTIPROC_DIR:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, settings.PROMETHEUS_MULTIPROC_DIR)
    else:
        registry = REGISTRY
    now = CollectorRegistry()
    now.register(_NowCollector())
    return generate_latest(registry) + generate_latest(now)
