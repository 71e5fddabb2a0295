"""Recording console sessions: who connected to which console, from where, how much, how it ended."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable
from datetime import timedelta
from typing import TYPE_CHECKING

from django.conf import settings
from django.db.models import F, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from console.errors import End
from console.metrics import BYTES, SESSIONS_ENDED, SESSIONS_STARTED
from console.models import ConsoleProtocol, ConsoleSession, ConsoleTicket
from console.notices import console_sessions_notify

if TYPE_CHECKING:
    from datetime import datetime

    from django.db.models import QuerySet

    from console.auth import User


# End reasons as metric labels: a bounded set, and never a person's name.
_PLAIN_REASONS = {
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
    if reason in _PLAIN_REASONS:
        return reason
    for end in End:
        if reason == end.reason:
            return end.name.lower()
    if "took over the serial console" in reason or "in another window" in reason:
        return "taken_over"
    if reason.startswith("the VM stopped") or "closed its serial console" in reason:
        return "vm_stopped"
    return "other"


def _worker() -> str:
    # websockify forks a process per connection: the name is read when a session starts.
    return f"{socket.gethostname()}:{os.getpid()}"


def open_sessions(rows: QuerySet[ConsoleSession]) -> QuerySet[ConsoleSession]:
    """The sessions among `rows` open now: not ended, and their process alive (a recent heartbeat)."""
    fresh = timezone.now() - timedelta(seconds=3 * settings.CONSOLE_RECHECK_SECONDS + 5)
    return rows.filter(ended_at__isnull=True, seen_at__gte=fresh)


def console_session_established(*, session_id: int) -> None:
    """The console answered and the client's handshake completed (serial: it was opened)."""
    ConsoleSession.objects.filter(pk=session_id).update(established_at=timezone.now())


def console_session_start(*, ticket: ConsoleTicket, via: str, client_address: str | None) -> ConsoleSession:
    now = timezone.now()
    SESSIONS_STARTED.labels(ticket.protocol, ticket.vm.host.name, via).inc()
    return ConsoleSession.objects.create(
        user_id=ticket.user_id,
        vm_id=ticket.vm_id,
        ticket=ticket,
        via=via,
        protocol=ticket.protocol,
        client_address=client_address or None,
        worker=_worker(),
        seen_at=now,
    )


def console_sessions_heartbeat(
    session_ids: Iterable[int],
    counters: dict[int, tuple[int, int]] | None = None,
    established: Iterable[int] = (),
) -> None:
    """The relaying process is alive and these sessions are open; `counters` are their bytes
    to and from the client so far, for the live consoles page; `established` those whose
    handshake completed since."""
    now = timezone.now()
    counters = counters or {}
    if established:
        ConsoleSession.objects.filter(pk__in=list(established), established_at__isnull=True).update(
            established_at=now
        )
    plain = [pk for pk in session_ids if pk not in counters]
    if plain:
        ConsoleSession.objects.filter(pk__in=plain, ended_at__isnull=True).update(seen_at=now)
    for pk, (to_client, from_client) in counters.items():
        ConsoleSession.objects.filter(pk=pk, ended_at__isnull=True).update(
            seen_at=now, bytes_to_client=to_client, bytes_from_client=from_client
        )


def console_sessions_end_requested(session_ids: Iterable[int]) -> set[int]:
    """Which of these open sessions an administrator asked to end."""
    return set(
        ConsoleSession.objects.filter(pk__in=list(session_ids), end_requested_at__isnull=False).values_list(
            "pk", flat=True
        )
    )


def console_session_end_request(*, session_id: int, by: User) -> bool:
    """An administrator ends an open session, wherever it runs: its relaying process ends it at
    once when the notice reaches it, at its next check (CONSOLE_RECHECK_SECONDS) otherwise.
    False if it is not open."""
    ended = bool(
        ConsoleSession.objects.filter(
            pk=session_id, ended_at__isnull=True, end_requested_at__isnull=True
        ).update(end_requested_at=timezone.now(), ended_by=by)
    )
    if ended:
        console_sessions_notify([session_id])
    return ended


def console_sessions_sweep() -> int:
    """End sessions whose relaying process stopped sending heartbeats (killed, crashed, its
    machine gone): recorded as ended when last seen, "worker lost". Returns how many."""
    lost_before = timezone.now() - timedelta(seconds=15 + 3 * settings.CONSOLE_RECHECK_SECONDS)
    return ConsoleSession.objects.filter(ended_at__isnull=True, seen_at__lt=lost_before).update(
        ended_at=F("seen_at"), end_reason="worker lost"
    )


def console_session_end(
    *, session_id: int, bytes_to_client: int, bytes_from_client: int, reason: str, established: bool = False
) -> None:
    """Record the end of a session: its totals (bytes since it started), how it ended, and, if
    no heartbeat did yet, that its handshake had completed."""
    SESSIONS_ENDED.labels(reason_label(reason)).inc()
    BYTES.labels("to_client").inc(bytes_to_client)
    BYTES.labels("from_client").inc(bytes_from_client)
    now = timezone.now()
    ConsoleSession.objects.filter(pk=session_id, ended_at__isnull=True).update(
        ended_at=now,
        bytes_to_client=bytes_to_client,
        bytes_from_client=bytes_from_client,
        end_reason=reason[:64],
        established_at=Coalesce(F("established_at"), Value(now)) if established else F("established_at"),
    )


def console_download_record(*, ticket: ConsoleTicket, client_address: str | None) -> ConsoleSession:
    """A .vv download, recorded like a session that ends as it starts."""
    return ConsoleSession.objects.create(
        user_id=ticket.user_id,
        vm_id=ticket.vm_id,
        ticket=ticket,
        via=ConsoleSession.Via.VV,
        protocol=ticket.protocol,
        client_address=client_address or None,
        ended_at=timezone.now(),
        end_reason="downloaded",
    )


def serial_console_holder(
    *, vm_id: int, besides: int | None, since: datetime | None = None
) -> ConsoleSession | None:
    """The open portal session holding the VM's serial console, if any besides session
    `besides`: the one that opened it last (a session still opening holds nothing). With
    `since`, the one that took it after that time, opened or still opening. Its user is
    selected."""
    fresh = timezone.now() - timedelta(seconds=3 * settings.CONSOLE_RECHECK_SECONDS + 5)
    rows = ConsoleSession.objects.filter(
        vm_id=vm_id, protocol=ConsoleProtocol.SERIAL, ended_at__isnull=True, seen_at__gte=fresh
    ).exclude(pk=besides or 0)
    if since is not None:
        return rows.filter(started_at__gt=since).select_related("user").order_by("-started_at").first()
    return (
        rows.filter(established_at__isnull=False).select_related("user").order_by("-established_at").first()
    )


def open_session_ids(**filters: object) -> list[int]:
    """Ids of the open sessions matching `filters` (ConsoleSession fields)."""
    return list(open_sessions(ConsoleSession.objects.filter(**filters)).values_list("pk", flat=True))
