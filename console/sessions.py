"""Recording console sessions: who connected to which console, from where, how much, how it ended."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable
from datetime import timedelta
from typing import TYPE_CHECKING

from django.conf import settings
from django.db.models import F
from django.utils import timezone

from console.metrics import BYTES, SESSIONS_ENDED, SESSIONS_STARTED, reason_label
from console.models import ConsoleProtocol, ConsoleSession, ConsoleShare, ConsoleTicket

if TYPE_CHECKING:
    from datetime import datetime

    from django.db.models import QuerySet

    from console.auth import User
    from console.models import VirtualMachine


def _worker() -> str:
    # websockify forks a process per connection: the name is read when a session starts.
    return f"{socket.gethostname()}:{os.getpid()}"


def open_sessions(rows: QuerySet[ConsoleSession]) -> QuerySet[ConsoleSession]:
    """The sessions among `rows` open now: not ended, and their process alive (a recent heartbeat)."""
    fresh = timezone.now() - timedelta(seconds=3 * settings.CONSOLE_RECHECK_SECONDS + 5)
    return rows.filter(ended_at__isnull=True, seen_at__gte=fresh)


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
    session_ids: Iterable[int], counters: dict[int, tuple[int, int]] | None = None
) -> None:
    """The relaying process is alive and these sessions are open; `counters` are their bytes
    to and from the client so far, for the live consoles page."""
    now = timezone.now()
    counters = counters or {}
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
    its next check (every CONSOLE_RECHECK_SECONDS). False if it is not open."""
    return bool(
        ConsoleSession.objects.filter(
            pk=session_id, ended_at__isnull=True, end_requested_at__isnull=True
        ).update(end_requested_at=timezone.now(), ended_by=by)
    )


def console_sessions_sweep() -> int:
    """End sessions whose relaying process stopped sending heartbeats (killed, crashed, its
    machine gone): recorded as ended when last seen, "worker lost". Returns how many."""
    lost_before = timezone.now() - timedelta(seconds=15 + 3 * settings.CONSOLE_RECHECK_SECONDS)
    return ConsoleSession.objects.filter(ended_at__isnull=True, seen_at__lt=lost_before).update(
        ended_at=F("seen_at"), end_reason="worker lost"
    )


def console_session_end(
    *, session_id: int, bytes_to_client: int, bytes_from_client: int, reason: str
) -> None:
    """Record the end of a session: its totals (bytes since it started) and how it ended."""
    SESSIONS_ENDED.labels(reason_label(reason)).inc()
    BYTES.labels("to_client").inc(bytes_to_client)
    BYTES.labels("from_client").inc(bytes_from_client)
    ConsoleSession.objects.filter(pk=session_id, ended_at__isnull=True).update(
        ended_at=timezone.now(),
        bytes_to_client=bytes_to_client,
        bytes_from_client=bytes_from_client,
        end_reason=reason[:64],
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
    *, vm_id: int, besides: int, since: datetime | None = None
) -> ConsoleSession | None:
    """The open portal session holding the VM's serial console, if any besides session
    `besides`; with `since`, only one opened after that time. Its user is selected."""
    fresh = timezone.now() - timedelta(seconds=3 * settings.CONSOLE_RECHECK_SECONDS + 5)
    rows = ConsoleSession.objects.filter(
        vm_id=vm_id, protocol=ConsoleProtocol.SERIAL, ended_at__isnull=True, seen_at__gte=fresh
    ).exclude(pk=besides)
    if since is not None:
        rows = rows.filter(started_at__gt=since)
    return rows.select_related("user").order_by("-started_at").first()


def console_share_create(*, vm: VirtualMachine, username: str, by: User) -> ConsoleShare:
    """Share `vm`'s console with the user named `username`, to watch read-only; ValueError says
    why not (no such user, the owner themself, already shared)."""
    from django.contrib.auth import get_user_model

    viewer = get_user_model().objects.filter(username=username.strip(), is_active=True).first()
    if viewer is None:
        raise ValueError(f"There is no active user {username.strip()!r}.")
    if viewer.pk == vm.owner_id:
        raise ValueError(f"{username} owns {vm.name} already.")
    if ConsoleShare.objects.filter(vm=vm, viewer=viewer, ended_at__isnull=True).exists():
        raise ValueError(f"{vm.name} is shared with {username} already.")
    return ConsoleShare.objects.create(vm=vm, viewer=viewer, shared_by=by)


def console_share_end(*, vm: VirtualMachine, share_id: int) -> bool:
    """Stop a share; the viewer's open consoles end at their next check (the guard)."""
    return bool(
        ConsoleShare.objects.filter(vm=vm, pk=share_id, ended_at__isnull=True).update(ended_at=timezone.now())
    )
