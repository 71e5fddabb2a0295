"""/healthz: the process answers (for HAProxy's health check; no database, no libvirt).
/readyz: it can serve: the database and the channel layer answer; each host's libvirt too,
in detail for staff (a host that is down makes its own VMs unavailable, not the portal)."""

import asyncio
import hmac
from collections.abc import Iterator

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection
from django.db.models import Count
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from console.hosts import RECENT_SECONDS, host_checks
from console.metrics import metrics_text
from console.models import ConsoleSession, Host
from console.sessions import open_sessions

LAYER_TIMEOUT = 2.0


@never_cache
def healthz(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok\n", content_type="text/plain")


def _database() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return "ok"
    except Exception as exc:  # noqa: BLE001 - any failure is the answer
        return f"failed: {type(exc).__name__}"


async def _layer_round_trip() -> None:
    layer = get_channel_layer()
    if layer is None:
        raise RuntimeError("no channel layer configured")
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "readyz.ping"})
    await asyncio.wait_for(layer.receive(channel), LAYER_TIMEOUT)


def _channel_layer() -> str:
    try:
        async_to_sync(_layer_round_trip)()
        return "ok"
    except Exception as exc:  # noqa: BLE001
        return f"failed: {type(exc).__name__}"


DEGRADED = {
    "channel_layer": "consoles, pages and the API work; an administrator's End, a share ended, a "
    "token revoked or a logout end open consoles at the next periodic check (within "
    "CONSOLE_RECHECK_SECONDS) instead of at once",
}


@never_cache
def readyz(request: HttpRequest) -> HttpResponse:
    """Ready when the database answers: without it nothing new can be admitted. The channel
    layer (Redis) only speeds notices up: without it the portal is degraded, still ready."""
    checks = {"database": _database(), "channel_layer": _channel_layer()}
    ready = checks["database"] == "ok"
    hosts = list(Host.objects.order_by("name")) if checks["database"] == "ok" else []
    staff = request.user.is_authenticated and request.user.is_staff
    # Anonymous callers (monitors, anyone) get checks of the last few seconds: however many
    # ask, each host is asked once at a time (console/hosts.py).
    health = host_checks(hosts, max_age=2.0 if staff else RECENT_SECONDS)
    body: dict[str, object] = {
        "ready": ready,
        **checks,
        "degraded": {name: why for name, why in DEGRADED.items() if checks[name] != "ok"},
        "hosts": {"up": sum(h.ok for h in health.values()), "down": sum(not h.ok for h in health.values())},
    }
    if staff:
        body["host_detail"] = {h.name: {"up": health[h.pk].ok, "detail": health[h.pk].text} for h in hosts}
    response = JsonResponse(body, status=200 if ready else 503)
    if not ready:
        response["Retry-After"] = "5"
    return response


@never_cache
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus metrics: for staff, or a scraper sending `Authorization: Bearer $METRICS_TOKEN`."""
    sent = request.headers.get("Authorization", "")
    by_token = bool(settings.METRICS_TOKEN) and hmac.compare_digest(
        sent.encode(), f"Bearer {settings.METRICS_TOKEN}".encode()
    )
    if not by_token and not (request.user.is_authenticated and request.user.is_staff):
        response = HttpResponse(
            "Metrics are for staff, or a scraper with the METRICS_TOKEN bearer token.\n",
            status=403 if request.user.is_authenticated else 401,
            content_type="text/plain",
        )
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(metrics_text(NowCollector()), content_type=CONTENT_TYPE_LATEST)


class NowCollector(Collector):
    """Sessions open and hosts up, as they are at scrape time."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
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
        health = host_checks(hosts, max_age=RECENT_SECONDS)
        for host in hosts:
            up.add_metric([host.name], 1 if health[host.pk].ok else 0)
        yield up
