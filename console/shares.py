"""Sharing a VM's console with another user for a time box: to watch it (viewer) or to use it
as an operator (console with keys, serial console, .vv, power). The share ends when its time is
up or its owner stops it; open consoles end with it (console.access, at their next recheck)."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from django.contrib.auth import get_user_model
from django.db.models import F
from django.utils import timezone
from django.utils.translation import gettext, gettext_noop

from console.models import ConsoleShare
from console.notices import console_sessions_notify
from console.sessions import open_session_ids

if TYPE_CHECKING:
    from console.auth import User
    from console.models import VirtualMachine


# How long a share may last (hours), as the page offers them.
SHARE_HOURS = {
    1: gettext_noop("1 hour"),
    4: gettext_noop("4 hours"),
    8: gettext_noop("8 hours"),
    24: gettext_noop("1 day"),
    168: gettext_noop("7 days"),
}
SHARE_HOURS_DEFAULT = 8
# A share's role as its owner's page names it (translated there).
ROLE_WORDS = (gettext_noop("viewer"), gettext_noop("operator"))


def console_share_create(
    *,
    vm: VirtualMachine,
    username: str,
    by: User,
    role: str = ConsoleShare.Role.VIEWER,
    hours: int = SHARE_HOURS_DEFAULT,
) -> ConsoleShare:
    """Share `vm`'s console with the user named `username` as `role` for `hours`; ValueError
    says why not (no such user, the owner themself, already shared, a role or time not offered)."""
    if role not in ConsoleShare.Role.values:
        raise ValueError(gettext("%(role)r is not a share's role: viewer or operator.") % {"role": role})
    if hours not in SHARE_HOURS:
        raise ValueError(
            gettext("A share lasts %(choices)s, not %(hours)r hours.")
            % {"choices": ", ".join(gettext(label) for label in SHARE_HOURS.values()), "hours": hours}
        )
    viewer = get_user_model().objects.filter(username=username.strip(), is_active=True).first()
    if viewer is None:
        raise ValueError(gettext("There is no active user %(name)r.") % {"name": username.strip()})
    if viewer.pk == vm.owner_id:
        raise ValueError(gettext("%(user)s owns %(vm)s already.") % {"user": username, "vm": vm.name})
    now = timezone.now()
    # A share past its time box is over: recorded as ended then, so a new one may start.
    ConsoleShare.objects.filter(vm=vm, viewer=viewer, ended_at__isnull=True, expires_at__lte=now).update(
        ended_at=F("expires_at")
    )
    if ConsoleShare.objects.filter(vm=vm, viewer=viewer, ended_at__isnull=True).exists():
        raise ValueError(
            gettext("%(vm)s is shared with %(user)s already; stop that share first.")
            % {"vm": vm.name, "user": username}
        )
    return ConsoleShare.objects.create(
        vm=vm, viewer=viewer, shared_by=by, role=role, expires_at=now + timedelta(hours=hours)
    )


def console_share_end(*, vm: VirtualMachine, share_id: int) -> bool:
    """Stop a share; the viewer's open consoles of the VM end at once (or at their next check)."""
    share = ConsoleShare.objects.filter(vm=vm, pk=share_id, ended_at__isnull=True).first()
    if share is None:
        return False
    ConsoleShare.objects.filter(pk=share.pk).update(ended_at=timezone.now())
    console_sessions_notify(open_session_ids(vm=vm, user_id=share.viewer_id))
    return True
