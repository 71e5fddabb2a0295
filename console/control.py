"""Handing control of a VNC console from one person to another: "request control".

Two people on one VNC console each have their own connection to QEMU (always shared). Who of
them may type and point is decided here and enforced by the proxy, never by the pages:

- a watcher (a view-only page) who could operate the VM (operator or admin role: viewers only
  ever watch) asks for control; nobody at the console with input: it is theirs at once;
- otherwise whoever has input on that console accepts or refuses; once accepted, the proxy
  passes the requester's keys and mouse and drops the holder's, on every console page of
  both login sessions (a page that reconnects keeps what was handed);
- the holder takes it back, or the requester gives it back, at any time; the requester's
  control ends at once if they lose the operator role.

Each step is a VmEvent (the audit trail) and a notice to the consoles concerned, whose
processes apply it at once (console.proxy.guard). SPICE is not offered: QEMU's SPICE server
takes one client at a time, so there is no console two people are on to hand over.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext

from console.access import vm_may_use
from console.errors import PortalError
from console.models import ConsoleProtocol, ConsoleSession, ConsoleTicket, ControlHandover, VmEvent
from console.notices import console_sessions_notify
from console.sessions import open_sessions

if TYPE_CHECKING:
    from collections.abc import Iterable

    from console.auth import User
    from console.models import VirtualMachine

State = ControlHandover.State
# A request nobody answered lapses after this long (the holder may have walked away).
ASK_SECONDS = 120


class ControlRefused(PortalError):
    """Why a request or an answer cannot be done (in words for the page)."""

    status = 409
    code = "control_refused"


@dataclass(frozen=True)
class Seat:
    """One login session at one VM's console: the unit control is handed between."""

    user_id: int
    session_key: str


def _holder(handover: ControlHandover) -> Seat:
    return Seat(handover.holder_id or 0, handover.holder_session)


def _requester(handover: ControlHandover) -> Seat:
    return Seat(handover.requester_id, handover.requester_session)


def _active(vm_ids: Iterable[int]) -> list[ControlHandover]:
    return list(ControlHandover.objects.filter(vm_id__in=set(vm_ids), state=State.ACCEPTED))


def _has_input(ticket: ConsoleTicket, handovers: list[ControlHandover]) -> bool:
    """A ticket's input, given the VM's accepted handovers: as issued, unless its seat handed
    control away; a watcher's if its seat was given control (and may still operate)."""
    seat = Seat(ticket.user_id, ticket.session_key)
    mine = [h for h in handovers if h.vm_id == ticket.vm_id]
    if any(_holder(h) == seat for h in mine):
        return False
    if not ticket.view_only:
        return True
    given = any(_requester(h) == seat for h in mine)
    return given and vm_may_use(ticket.user, ticket.vm)


def console_inputs(ticket_ids: Iterable[int]) -> dict[int, bool]:
    """For open VNC consoles: whether each ticket's keys and mouse reach the VM now (two
    queries; a third per console given control, for its role)."""
    tickets = list(
        ConsoleTicket.objects.select_related("user", "vm").filter(
            pk__in=set(ticket_ids), protocol=ConsoleProtocol.VNC
        )
    )
    handovers = _active(t.vm_id for t in tickets) if tickets else []
    return {t.pk: _has_input(t, handovers) for t in tickets}


def _open_tickets(vm: VirtualMachine) -> list[ConsoleTicket]:
    """The tickets of the VM's open VNC consoles (pages with a login session)."""
    sessions = open_sessions(ConsoleSession.objects.filter(vm=vm))
    return list(
        ConsoleTicket.objects.select_related("user", "vm")
        .filter(pk__in=sessions.values("ticket_id"), protocol=ConsoleProtocol.VNC)
        .exclude(session_key="")
    )


def _seat_has_input(seat: Seat, tickets: list[ConsoleTicket], handovers: list[ControlHandover]) -> bool:
    return any(Seat(t.user_id, t.session_key) == seat and _has_input(t, handovers) for t in tickets)


def _notify(vm: VirtualMachine, *seats: Seat) -> None:
    users = {seat.user_id for seat in seats}
    console_sessions_notify(
        open_sessions(ConsoleSession.objects.filter(vm=vm, user_id__in=users)).values_list("pk", flat=True)
    )


def _ask_cutoff() -> datetime:
    return timezone.now() - timedelta(seconds=ASK_SECONDS)


def _lapse(vm: VirtualMachine) -> None:
    """Requests nobody answered in time lapse (recorded by the next request or answer; the
    pages' polls read them as lapsed without writing)."""
    ControlHandover.objects.filter(vm=vm, state=State.ASKED, asked_at__lt=_ask_cutoff()).update(
        state=State.WITHDRAWN, ended_at=timezone.now()
    )


def control_handed_check(*, user: User, vm: VirtualMachine, session_key: str) -> None:
    """The page's Type text and keys menu act for the one with control: ControlRefused when
    this login session handed it over."""
    handed = ControlHandover.objects.filter(
        vm=vm, state=State.ACCEPTED, holder=user, holder_session=session_key
    ).select_related("requester")
    if session_key and (handover := handed.first()) is not None:
        raise ControlRefused(
            gettext("You gave control of this console to %(user)s; take it back first.")
            % {"user": handover.requester.username}
        )


def control_state(*, user: User, vm: VirtualMachine, session_key: str, watching: bool) -> dict:
    """What a console page shows of control (it asks every few seconds while connected):
    whether it has input, who asks for it, whom it went to."""
    seat = Seat(user.pk, session_key)
    live = Q(state=State.ACCEPTED) | Q(state=State.ASKED, asked_at__gte=_ask_cutoff())
    handovers = list(ControlHandover.objects.filter(live, vm=vm))
    accepted = [h for h in handovers if h.state == State.ACCEPTED]
    page = ConsoleTicket(user=user, vm=vm, session_key=session_key, view_only=watching)
    has_input = _has_input(page, accepted)
    handed_to = [h.requester.username for h in accepted if _holder(h) == seat]
    given_by = [h.holder.username if h.holder else "" for h in accepted if _requester(h) == seat]
    asked = next((h for h in handovers if h.state == State.ASKED and _requester(h) == seat), None)
    asking = [
        {"id": h.pk, "user": h.requester.username}
        for h in handovers
        if h.state == State.ASKED and _requester(h) != seat
    ]
    return {
        "input": has_input,
        "mayRequest": not has_input and asked is None and vm_may_use(user, vm),
        "asked": asked.pk if asked else None,
        "requests": asking if has_input else [],
        "handedTo": handed_to[0] if handed_to else None,
        "givenBy": given_by[0] if given_by else None,
    }


def control_request(*, user: User, vm: VirtualMachine, session_key: str) -> ControlHandover:
    """`user`'s watcher page asks for control of `vm`'s VNC console: accepted at once when
    nobody else has input there, else asked of those who do."""
    if not vm_may_use(user, vm):
        raise ControlRefused(
            gettext("A viewer may only watch; ask the VM's owner for an operator share to take control.")
        )
    if not session_key:
        raise ControlRefused(gettext("Control is handed between console pages of logged-in users."))
    seat = Seat(user.pk, session_key)
    with transaction.atomic():
        _lapse(vm)
        tickets = _open_tickets(vm)
        handovers = _active([vm.pk])
        if _seat_has_input(seat, tickets, handovers):
            raise ControlRefused(gettext("You have control already."))
        if ControlHandover.objects.filter(
            vm=vm, state=State.ASKED, requester=user, requester_session=session_key
        ).exists():
            raise ControlRefused(gettext("You asked already; wait for the answer, or withdraw."))
        if any(_holder(h) == seat for h in handovers):
            raise ControlRefused(gettext("You handed control over; take it back instead."))
        others = [t for t in tickets if Seat(t.user_id, t.session_key) != seat and _has_input(t, handovers)]
        now = timezone.now()
        if others:
            handover = ControlHandover.objects.create(vm=vm, requester=user, requester_session=session_key)
            VmEvent.objects.create(vm=vm, user=user, action="control asked")
            return handover
        handover = ControlHandover.objects.create(
            vm=vm, requester=user, requester_session=session_key, state=State.ACCEPTED, answered_at=now
        )
        VmEvent.objects.create(vm=vm, user=user, action="control taken", detail="nobody else had input")
    _notify(vm, seat)
    return handover


def control_answer(
    *, user: User, vm: VirtualMachine, session_key: str, handover_id: int, accept: bool
) -> ControlHandover:
    """The person with input on `vm`'s console accepts or refuses a request for control."""
    seat = Seat(user.pk, session_key)
    with transaction.atomic():
        _lapse(vm)
        handover = (
            ControlHandover.objects.select_for_update()
            .select_related("requester")
            .filter(vm=vm, pk=handover_id)
            .first()
        )
        if handover is None or handover.state != State.ASKED:
            raise ControlRefused(gettext("That request is no longer open (withdrawn, answered or lapsed)."))
        if not vm_may_use(user, vm) or not _seat_has_input(seat, _open_tickets(vm), _active([vm.pk])):
            raise ControlRefused(gettext("Only someone with control of this console may answer."))
        handover.holder, handover.holder_session = user, session_key
        handover.state = State.ACCEPTED if accept else State.REFUSED
        handover.answered_at = timezone.now()
        handover.save(update_fields=["holder", "holder_session", "state", "answered_at"])
        VmEvent.objects.create(
            vm=vm,
            user=user,
            action="control given" if accept else "control refused",
            detail=f"to {handover.requester.username}",
        )
    if accept:
        _notify(vm, seat, Seat(handover.requester_id, handover.requester_session))
    return handover


def control_end(*, user: User, vm: VirtualMachine, session_key: str) -> int:
    """Take control back (as its holder), give it back (as its requester) or withdraw a
    request: how many handovers ended."""
    seat = Seat(user.pk, session_key)
    now = timezone.now()
    with transaction.atomic():
        mine = Q(holder=user, holder_session=session_key) | Q(requester=user, requester_session=session_key)
        ended = list(
            ControlHandover.objects.select_for_update().filter(
                mine, vm=vm, state__in=[State.ASKED, State.ACCEPTED]
            )
        )
        for handover in ended:
            handover.state = State.WITHDRAWN if handover.state == State.ASKED else State.ENDED
            handover.ended_at = now
            handover.save(update_fields=["state", "ended_at"])
        if any(h.state == State.ENDED for h in ended):
            VmEvent.objects.create(vm=vm, user=user, action="control back")
    seats = [seat]
    for h in ended:
        seats += [_requester(h), _holder(h)]
    _notify(vm, *seats)
    return len(ended)
