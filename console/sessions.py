"""Recording console sessions: who connected to which console, from where, how much, how it ended."""

from __future__ import annotations

from django.db.models import F
from django.utils import timezone

from console.models import ConsoleSession, ConsoleTicket


def console_session_start(*, ticket: ConsoleTicket, via: str, client_address: str | None) -> ConsoleSession:
    return ConsoleSession.objects.create(
        user_id=ticket.user_id,
        vm_id=ticket.vm_id,
        ticket=ticket,
        via=via,
        protocol=ticket.protocol,
        client_address=client_address or None,
    )


def console_session_end(
    *, session_id: int, bytes_to_client: int, bytes_from_client: int, reason: str
) -> None:
    ConsoleSession.objects.filter(pk=session_id, ended_at__isnull=True).update(
        ended_at=timezone.now(),
        bytes_to_client=F("bytes_to_client") + bytes_to_client,
        bytes_from_client=F("bytes_from_client") + bytes_from_client,
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
