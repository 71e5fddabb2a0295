"""Console tickets: issue one, admit connections, and check, for as long as a console stays
open, that the right it was issued on still holds.

A ticket is a random token (192 bits, hex, so it can also stand as a host name in a .vv
file's proxy CONNECT) that only the client sees; the database keeps its SHA-256. Issuing one
reads the console endpoint from the running domain's live XML and makes sure the VM's
graphics password (which only the portal's proxies know: console/graphics.py) stays valid
for the ticket's life; the console port itself admits nobody without it.

A ticket admits connections on one path only (its kind), from the page origin that asked for
it, to the domain instance that was running when it was issued. The right behind it — the
login session that asked, the user's password, the account being active, the VM being theirs —
is checked again at every admission and, by `console.guard`, every few seconds while the
console stays open.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib import import_module
from typing import TYPE_CHECKING

from django.conf import settings
from django.contrib.auth import SESSION_KEY
from django.db.models import F
from django.utils import timezone
from django.utils.translation import gettext

from console.access import vm_may_use, vm_shared_with
from console.accounts import accounts_recheck
from console.domainxml import GraphicsEndpoint, graphics_endpoint, has_serial_console
from console.errors import ConsoleUnavailable, End, RateLimited, Refused
from console.globalconfig import IDLE_TIMEOUT, MAX_SESSION, MAX_SESSIONS_PER_USER, config_int
from console.graphics import graphics_password_ensure
from console.hypervisor import (
    ACTIVE_STATES,
    DomainNotFound,
    DomainNotRunning,
    HypervisorUnavailable,
    hypervisor_for,
)
from console.hypervisor.ssh import ssh_target
from console.livemigration import spice_consoles_moving, vm_migration_check
from console.models import ConsoleProtocol, ConsoleSession, ConsoleTicket, VirtualMachine
from console.sessions import console_sessions_sweep

if TYPE_CHECKING:
    from console.auth import User

# Expired tickets are kept this long (sessions refer to them), then deleted.
TICKET_RETENTION = timedelta(days=1)
RATE_WINDOW = timedelta(seconds=60)


@dataclass(frozen=True)
class IssuedTicket:
    """What the client gets, shown once: the token, and for a .vv file its password (a
    one-time secret the SPICE proxy checks, or, for a file that names the host directly, the
    VM's graphics password for the file's short life)."""

    token: str
    protocol: str
    expires_at: datetime
    ticket: ConsoleTicket
    vv_password: str = ""


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def auth_hash(user: User) -> str:
    """A digest of the user's session hash, which changes with their password."""
    return hashlib.sha256(user.get_session_auth_hash().encode()).hexdigest()


def console_endpoint(vm: VirtualMachine) -> tuple[GraphicsEndpoint, str]:
    """The running VM's console endpoint and live XML, or ConsoleUnavailable."""
    hypervisor = hypervisor_for(vm.host)
    state = hypervisor.state(vm.name)
    if state not in ACTIVE_STATES:
        raise ConsoleUnavailable(
            gettext("%(vm)s is %(state)s; start it to open its console.")
            % {"vm": vm.name, "state": gettext(state)}
        )
    try:
        live_xml = hypervisor.xml(vm.name)
    except DomainNotFound:
        raise ConsoleUnavailable(
            gettext("%(vm)s is not defined on %(host)s.") % {"vm": vm.name, "host": vm.host.name}
        ) from None
    endpoint = graphics_endpoint(live_xml)
    if endpoint is None:
        raise ConsoleUnavailable(gettext("%(vm)s has no SPICE or VNC console.") % {"vm": vm.name})
    return endpoint, live_xml


def _rate_check(user: User, vm: VirtualMachine, now: datetime) -> None:
    """Tickets cost libvirt calls (and may rotate the VM's graphics password): refuse floods,
    per user and VM and per user."""
    since = now - RATE_WINDOW
    recent = ConsoleTicket.objects.filter(user=user, created_at__gte=since)
    for rows, limit, what in (
        (
            recent.filter(vm=vm),
            settings.CONSOLE_TICKETS_PER_MINUTE_PER_VM,
            gettext("for %(vm)s") % {"vm": vm.name},
        ),
        (recent, settings.CONSOLE_TICKETS_PER_MINUTE, gettext("in all")),
    ):
        if limit <= 0:
            continue
        times = list(rows.order_by("-created_at").values_list("created_at", flat=True)[:limit])
        if len(times) >= limit:
            retry_after = max(1, int((times[-1] + RATE_WINDOW - now).total_seconds()) + 1)
            raise RateLimited(
                gettext(
                    "Too many consoles opened %(what)s in the last minute (%(limit)s allowed); "
                    "try again in %(seconds)s s."
                )
                % {"what": what, "limit": limit, "seconds": retry_after},
                retry_after,
            )


# A ticket's password stays valid this long after the ticket expires: a console's last channel
# may connect in the ticket's last second and still meet the same password.
PASSWORD_MARGIN = timedelta(seconds=30)


def console_ticket_issue(
    *,
    user: User,
    vm: VirtualMachine,
    kind: str = ConsoleTicket.Kind.BROWSER,
    origin: str = "",
    session_key: str = "",
    seconds: int | None = None,
    max_connections: int | None = None,
    view_only: bool = False,
    api_token_id: int | None = None,
    vv_spice_proxy: bool = False,
) -> IssuedTicket:
    """Issue a ticket for `user` to `vm`'s console.

    `origin` is the page that will connect (browser kinds); `session_key` the login session,
    `api_token_id` the API token, whose end ends the ticket's consoles. A .vv ticket (kind
    "vv") comes with the file's password: a one-time secret the SPICE proxy checks (a SPICE
    console, `vv_spice_proxy`), or else, for a file naming the host (which no proxy sees), a
    fresh graphics password of the VM, valid as long as the ticket.
    """
    if not vm_may_use(user, vm) and not (view_only and vm_shared_with(user, vm)):
        raise PermissionError(f"{user} may not use {vm}")
    vm_migration_check(vm)
    if seconds is None:
        seconds = settings.CONSOLE_TICKET_SECONDS
    now = timezone.now()
    _rate_check(user, vm, now)
    endpoint, live_xml = console_endpoint(vm)
    hypervisor = hypervisor_for(vm.host)
    domain_id = hypervisor.domain_id(vm.name)
    expires_at = now + timedelta(seconds=seconds)
    vv_password = client_secret = ""
    vv_direct = kind == ConsoleTicket.Kind.VV and not (vv_spice_proxy and endpoint.type == "spice")
    try:
        if vv_direct:
            vv_password = graphics_password_ensure(
                vm=vm,
                hypervisor=hypervisor,
                live_xml=live_xml,
                domain_id=domain_id,
                min_valid=timedelta(seconds=seconds),
                force=True,
                valid_for=timedelta(seconds=seconds),
            ).password
        else:
            graphics_password_ensure(
                vm=vm,
                hypervisor=hypervisor,
                live_xml=live_xml,
                domain_id=domain_id,
                min_valid=timedelta(seconds=seconds) + PASSWORD_MARGIN,
            )
    except (DomainNotRunning, DomainNotFound):
        raise ConsoleUnavailable(
            gettext("%(vm)s stopped; start it to open its console.") % {"vm": vm.name}
        ) from None
    if kind == ConsoleTicket.Kind.VV and not vv_direct:
        vv_password = client_secret = secrets.token_urlsafe(24)
    token = secrets.token_hex(24)
    ConsoleTicket.objects.filter(expires_at__lt=now - TICKET_RETENTION).delete()
    console_sessions_sweep()  # so a lost worker's consoles do not count against the user
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
        origin=origin,
        session_key=session_key or "",
        auth_hash=auth_hash(user),
        domain_id=domain_id,
        view_only=view_only,
        client_secret_hash=hashlib.sha256(client_secret.encode()).hexdigest() if client_secret else "",
        api_token_id=api_token_id,
    )
    return IssuedTicket(token, endpoint.type, expires_at, ticket, vv_password)


def serial_ticket_issue(*, user: User, vm: VirtualMachine, origin: str, session_key: str) -> IssuedTicket:
    """Issue a ticket for `user` to `vm`'s serial console (opened by the portal itself through
    libvirt's console stream API, so no port and no password)."""
    if not vm_may_use(user, vm):
        raise PermissionError(f"{user} may not use {vm}")
    vm_migration_check(vm)
    now = timezone.now()
    _rate_check(user, vm, now)
    hypervisor = hypervisor_for(vm.host)
    state = hypervisor.state(vm.name)
    if state not in ACTIVE_STATES:
        raise ConsoleUnavailable(
            gettext("%(vm)s is %(state)s; start it to open its serial console.")
            % {"vm": vm.name, "state": gettext(state)}
        )
    try:
        live_xml = hypervisor.xml(vm.name)
    except DomainNotFound:
        raise ConsoleUnavailable(
            gettext("%(vm)s is not defined on %(host)s.") % {"vm": vm.name, "host": vm.host.name}
        ) from None
    if not has_serial_console(live_xml):
        raise ConsoleUnavailable(
            gettext("%(vm)s has no serial console. Tick 'serial console' on the VM and restart it.")
            % {"vm": vm.name}
        )
    token = secrets.token_hex(24)
    expires_at = now + timedelta(seconds=settings.CONSOLE_TICKET_SECONDS)
    ticket = ConsoleTicket.objects.create(
        token_hash=token_hash(token),
        user=user,
        vm=vm,
        kind=ConsoleTicket.Kind.SERIAL,
        protocol=ConsoleProtocol.SERIAL,
        address="",
        port=0,
        expires_at=expires_at,
        max_connections=1,
        origin=origin,
        session_key=session_key or "",
        auth_hash=auth_hash(user),
        domain_id=hypervisor.domain_id(vm.name),
    )
    return IssuedTicket(token, ConsoleProtocol.SERIAL, expires_at, ticket)


def console_tickets_revoke(*, vm: VirtualMachine, reason: str) -> int:
    """Revoke the VM's unexpired tickets (it stopped or restarted); returns how many."""
    now = timezone.now()
    return ConsoleTicket.objects.filter(vm=vm, expires_at__gt=now, revoked_at__isnull=True).update(
        revoked_at=now, revoked_reason=reason[:64]
    )


def _session_users(session_keys: Iterable[str]) -> dict[str, str | None]:
    """For each login session key: the id of the user logged in with it, or None once it ended."""
    engine = import_module(settings.SESSION_ENGINE)
    users = {}
    for key in set(session_keys):
        data = engine.SessionStore(key).load()  # {} when the session ended or expired
        users[key] = str(data[SESSION_KEY]) if SESSION_KEY in data else None
    return users


def _right_refusal(ticket: ConsoleTicket, session_users: dict[str, str | None]) -> End | None:
    """Whether the right the ticket was issued on still holds (None) or why not."""
    user = ticket.user
    token = ticket.api_token
    if token is not None and (
        token.revoked_at is not None or (token.expires_at is not None and token.expires_at <= timezone.now())
    ):
        return End.TOKEN_REVOKED
    if not user.is_active:
        return End.DEACTIVATED
    if ticket.auth_hash != auth_hash(user):
        return End.PASSWORD_CHANGED
    if ticket.session_key and session_users.get(ticket.session_key) != str(user.pk):
        return End.LOGGED_OUT
    if not vm_may_use(user, ticket.vm):
        if not ticket.view_only:
            return End.FORBIDDEN
        if not vm_shared_with(user, ticket.vm):
            return End.SHARE_ENDED
    if ticket.revoked_at is not None:
        return End.VM_RESTARTED
    return None


# Consoles whose page reports the user's input (the idle limit applies to them only).
IDLE_KINDS = {ConsoleTicket.Kind.BROWSER, ConsoleTicket.Kind.SERIAL}


def console_input_record(ticket_ids: Iterable[int]) -> None:
    """The user pressed a key or moved the mouse on these consoles since the last check."""
    ConsoleTicket.objects.filter(pk__in=set(ticket_ids)).update(last_input_at=timezone.now())


def _limit_refusal(ticket: ConsoleTicket, now: datetime, idle_minutes: int, max_minutes: int) -> End | None:
    if max_minutes and now - ticket.created_at > timedelta(minutes=max_minutes):
        return End.TOO_LONG
    last_input = ticket.last_input_at or ticket.created_at
    watching = ticket.view_only  # a watcher has no input to give
    if (
        idle_minutes
        and ticket.kind in IDLE_KINDS
        and not watching
        and now - last_input > timedelta(minutes=idle_minutes)
    ):
        return End.IDLE
    return None


def console_rights_check(ticket_ids: Iterable[int]) -> dict[int, End | None]:
    """For open consoles: each ticket's refusal, if its right no longer holds or a limit (idle,
    length) is reached (in a few queries)."""
    tickets = list(
        ConsoleTicket.objects.select_related("user", "vm", "api_token").filter(pk__in=set(ticket_ids))
    )
    accounts_recheck({t.user_id: t.user for t in tickets}.values())  # a directory drop: DEACTIVATED
    session_users = _session_users(t.session_key for t in tickets if t.session_key)
    now, idle, longest = timezone.now(), config_int(IDLE_TIMEOUT), config_int(MAX_SESSION)
    moving = spice_consoles_moving({t.vm_id for t in tickets if t.protocol == ConsoleProtocol.SPICE})
    found = {
        ticket.pk: _right_refusal(ticket, session_users)
        or _limit_refusal(ticket, now, idle, longest)
        or (End.VM_MOVED if ticket.vm_id in moving and ticket.protocol == ConsoleProtocol.SPICE else None)
        for ticket in tickets
    }
    # A ticket deleted under an open console (its VM or user deleted) ends it too.
    return {pk: found.get(pk, End.FORBIDDEN) for pk in set(ticket_ids)}


def _open_consoles(user_id: int, *, besides: int) -> int:
    """How many consoles (tickets with live sessions) the user has open, besides one ticket."""
    fresh = timezone.now() - timedelta(seconds=3 * settings.CONSOLE_RECHECK_SECONDS + 5)
    return (
        ConsoleSession.objects.filter(user_id=user_id, ended_at__isnull=True, seen_at__gte=fresh)
        .exclude(ticket_id=besides)
        .values("ticket_id")
        .distinct()
        .count()
    )


def ticket_kind(token: str) -> str | None:
    """The kind of the ticket a token names (None if none): which admission rules apply."""
    if not token:
        return None
    return ConsoleTicket.objects.filter(token_hash=token_hash(token)).values_list("kind", flat=True).first()


def console_ticket_admit(
    *,
    token: str,
    kind: str,
    origin: str | None = None,
    user: User | None = None,
    vm_id: int | None = None,
    port: int | None = None,
) -> ConsoleTicket:
    """Count one connection on a ticket, or raise Refused saying why.

    `kind` is the path asking (a ticket admits on its own path only); `origin`, when given,
    must be the page origin the ticket was issued to; `user` and `vm_id` must be the
    ticket's (the browser proxy knows both; the standalone proxies know only the token);
    `port` must be one of the ticket's console ports (the SPICE proxy's CONNECT).
    Refused connections use up nothing.
    """
    ticket = (
        ConsoleTicket.objects.select_related("vm__host", "user", "api_token")
        .filter(token_hash=token_hash(token))
        .first()
        if token
        else None
    )
    if ticket is None:
        raise Refused(End.UNKNOWN_TICKET)
    if ticket.kind != kind:
        raise Refused(End.WRONG_PATH)
    if origin is not None and ticket.origin and origin != ticket.origin:
        raise Refused(End.FOREIGN_ORIGIN)
    if user is not None and ticket.user_id != user.pk:
        raise Refused(End.OTHER_USER)
    if vm_id is not None and ticket.vm_id != vm_id:
        raise Refused(End.OTHER_VM)
    if port is not None and port not in (ticket.port, ticket.tls_port):
        raise Refused(End.OTHER_VM)
    now = timezone.now()
    if ticket.expires_at <= now:
        raise Refused(End.EXPIRED)
    session_users = _session_users([ticket.session_key] if ticket.session_key else [])
    refusal = _right_refusal(ticket, session_users)
    if refusal is not None:
        raise Refused(refusal)
    limit = config_int(MAX_SESSIONS_PER_USER)
    if limit > 0 and _open_consoles(ticket.user_id, besides=ticket.pk) >= limit:
        raise Refused(End.TOO_MANY_CONSOLES)
    # The domain that answers now must be the one the ticket was issued for: a VM restarted
    # since may listen on the same port, and the ticket must not open its new console.
    try:
        live_id = hypervisor_for(ticket.vm.host).domain_id(ticket.vm.name)
    except HypervisorUnavailable:
        raise Refused(End.HOST_DOWN) from None
    if live_id is None or live_id != ticket.domain_id:
        raise Refused(End.VM_RESTARTED)
    # One conditional UPDATE, so concurrent connections cannot exceed the cap.
    admitted = ConsoleTicket.objects.filter(
        pk=ticket.pk, expires_at__gt=now, connections__lt=F("max_connections")
    ).update(connections=F("connections") + 1)
    if not admitted:
        raise Refused(End.EXHAUSTED)
    ticket.ssh = ssh_target(ticket.vm.host)  # how the proxy reaches the console (None: directly)
    return ticket
