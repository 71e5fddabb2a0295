"""Sharing a VM's console with another user, to watch it read-only."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.contrib.auth import get_user_model
from django.utils import timezone

from console.models import ConsoleShare
from console.notices import console_sessions_notify
from console.sessions import open_session_ids

if TYPE_CHECKING:
    from console.auth import User
    from console.models import VirtualMachine


def console_share_create(*, vm: VirtualMachine, username: str, by: User) -> ConsoleShare:
    """Share `vm`'s console with the user named `username`, to watch read-only; ValueError says
    why not (no such user, the owner themself, already shared)."""
    viewer = get_user_model().objects.filter(username=username.strip(), is_active=True).first()
    if viewer is None:
        raise ValueError(f"There is no active user {username.strip()!r}.")
    if viewer.pk == vm.owner_id:
        raise ValueError(f"{username} owns {vm.name} already.")
    if ConsoleShare.objects.filter(vm=vm, viewer=viewer, ended_at__isnull=True).exists():
        raise ValueError(f"{vm.name} is shared with {username} already.")
    return ConsoleShare.objects.create(vm=vm, viewer=viewer, shared_by=by)


def console_share_end(*, vm: VirtualMachine, share_id: int) -> bool:
    """Stop a share; the viewer's open consoles of the VM end at once (or at their next check)."""
    share = ConsoleShare.objects.filter(vm=vm, pk=share_id, ended_at__isnull=True).first()
    if share is None:
        return False
    ConsoleShare.objects.filter(pk=share.pk).update(ended_at=timezone.now())
    console_sessions_notify(open_session_ids(vm=vm, user_id=share.viewer_id))
    return True
