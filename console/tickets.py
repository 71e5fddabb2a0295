"""Console tickets: issue one (and open the VM's console password for it), and admit connections.

A ticket is a random token (192 bits, hex, so it can also stand as a host name in a .vv
file's proxy CONNECT) that only the client sees; the database keeps its
SHA-256. Issuing one reads the console endpoint from the running domain's live XML and sets a
fresh graphics password on the domain that expires with the ticket, so even someone who can
reach the console port on the host cannot connect without one.
"""

from __future__ import annotations

import enum
import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import F
from django.utils import timezone

from console.access import vm_may_use
from console.domainxml import (
    GraphicsEndpoint,
    graphics_endpoint,
    graphics_password_new,
    graphics_password_xml,
)
from console.hypervisor import ACTIVE_STATES, DomainNotFound, DomainNotRunning, hypervisor_for
from console.models import ConsoleTicket, VirtualMachine

# Expired tickets are kept this long (sessions refer to them), then deleted.
TICKET_RETENTION = timedelta(days=1)


class ConsoleUnavailable(Exception):
    """The VM has no console to open now (not running, or no graphics device); says why."""


class Refusal(enum.Enum):
    """Why a connection was refused; the value is the WebSocket close code the proxy uses."""

    FOREIGN_ORIGIN = 4001
    NOT_LOGGED_IN = 4002
    UNKNOWN_TICKET = 4003
    EXPIRED = 4004
    EXHAUSTED = 4005
    OTHER_USER = 4006
    OTHER_VM = 4007
    FORBIDDEN = 4008

    @property
    def message(self) -> str:
        return _REFUSAL_MESSAGES[self]


_REFUSAL_MESSAGES = {
    Refusal.FOREIGN_ORIGIN: "the page is not served by this portal",
    Refusal.NOT_LOGGED_IN: "not logged in",
    Refusal.UNKNOWN_TICKET: "unknown console ticket",
    Refusal.EXPIRED: "the console ticket has expired",
    Refusal.EXHAUSTED: "the console ticket has been used up",
    Refusal.OTHER_USER: "the console ticket belongs to another user",
    Refusal.OTHER_VM: "the console ticket is for another VM",
    Refusal.FORBIDDEN: "you may no longer use this VM",
}


class TicketRefused(Exception):
    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.message)
        self.refusal = refusal


@dataclass(frozen=True)
class IssuedTicket:
    """What the client gets: the token and the graphics password, shown once."""

    token: str
    password: str
    protocol: str
    expires_at: datetime
    ticket: ConsoleTicket


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def console_endpoint(vm: VirtualMachine) -> tuple[GraphicsEndpoint, str]:
    """The running VM's console endpoint and live XML, or ConsoleUnavailable."""
    hypervisor = hypervisor_for(vm.host.uri)
    state = hypervisor.state(vm.name)
    if state not in ACTIVE_STATES:
        raise ConsoleUnavailable(f"{vm.name} is {state}; start it to open its console.")
    try:
        live_xml = hypervisor.xml(vm.name)
    except DomainNotFound:
        raise ConsoleUnavailable(f"{vm.name} is not defined on {vm.host.name}.") from None
    endpoint = graphics_endpoint(live_xml)
    if endpoint is None:
        raise ConsoleUnavailable(f"{vm.name} has no SPICE or VNC console.")
    return endpoint, live_xml


def console_ticket_issue(
    *,
    user,
    vm: VirtualMachine,
    kind: str = ConsoleTicket.Kind.BROWSER,
    seconds: int | None = None,
    max_connections: int | None = None,
) -> IssuedTicket:
    """Issue a ticket for `user` to `vm`'s console and open the console's password for it."""
    if not vm_may_use(user, vm):
        raise PermissionError(f"{user} may not use {vm}")
    if seconds is None:
        seconds = settings.CONSOLE_TICKET_SECONDS
    endpoint, live_xml = console_endpoint(vm)
    hypervisor = hypervisor_for(vm.host.uri)
    now = timezone.now()
    expires_at = now + timedelta(seconds=seconds)
    password = graphics_password_new(endpoint.type)
    try:
        hypervisor.update_graphics(
            vm.name,
            graphics_password_xml(live_xml, password=password, valid_until=expires_at),
        )
    except (DomainNotRunning, DomainNotFound):
        raise ConsoleUnavailable(f"{vm.name} stopped; start it to open its console.") from None
    token = secrets.token_hex(24)
    ConsoleTicket.objects.filter(expires_at__lt=now - TICKET_RETENTION).delete()
    ticket = ConsoleTicket.objects.create(
        token_hash=token_hash(token),
        user=user,
        vm=vm,
        kind=kind,
        protocol=endpoint.type,
        # The proxies reach the console at the address the host's admin configured for clients.
        address=vm.host.console_client_address,
        port=endpoint.port,
        tls_port=endpoint.tls_port,
        expires_at=expires_at,
        max_connections=max_connections or settings.CONSOLE_TICKET_MAX_CONNECTIONS,
    )
    return IssuedTicket(token, password, endpoint.type, expires_at, ticket)


def console_ticket_admit(*, token: str, user=None, vm_id: int | None = None) -> ConsoleTicket:
    """Count one connection on a ticket, or raise TicketRefused saying why.

    `user` and `vm_id`, when given, must be the ticket's (the browser proxy knows both; the
    standalone proxies know only the token). Refused connections use up nothing.
    """
    ticket = (
        ConsoleTicket.objects.select_related("vm__host", "user").filter(token_hash=token_hash(token)).first()
        if token
        else None
    )
    if ticket is None:
        raise TicketRefused(Refusal.UNKNOWN_TICKET)
    if user is not None and ticket.user_id != user.pk:
        raise TicketRefused(Refusal.OTHER_USER)
    if vm_id is not None and ticket.vm_id != vm_id:
        raise TicketRefused(Refusal.OTHER_VM)
    if not vm_may_use(ticket.user, ticket.vm):
        raise TicketRefused(Refusal.FORBIDDEN)
    now = timezone.now()
    if ticket.expires_at <= now:
        raise TicketRefused(Refusal.EXPIRED)
    # One conditional UPDATE, so concurrent connections cannot exceed the cap.
    admitted = ConsoleTicket.objects.filter(
        pk=ticket.pk, expires_at__gt=now, connections__lt=F("max_connections")
    ).update(connections=F("connections") + 1)
    if not admitted:
        raise TicketRefused(Refusal.EXHAUSTED)
    return ticket
