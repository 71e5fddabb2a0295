"""The one access check: who may see and operate a VM, and open its console.

Every entry point (pages, actions, tickets, the WebSocket proxy, .vv downloads) goes
through here; a VM someone may not use is reported as not found, so its existence leaks not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.http import Http404

from console.models import VirtualMachine

if TYPE_CHECKING:
    from console.auth import User


def vm_may_use(user: User, vm: VirtualMachine) -> bool:
    """Whether `user` may operate `vm` and open its console: its owner, or staff (both as
    loaded: callers that check a right again later load the rows again)."""
    return vm.usable_by(user)


def vm_shared_with(user: User, vm: VirtualMachine) -> bool:
    """Whether the VM's console is shared with `user` to watch (read-only) now."""
    if not user.is_authenticated or not user.is_active:
        return False
    return vm.shares.filter(viewer=user, ended_at__isnull=True).exists()


def vm_get_for_watching(*, user: User, vm_id: int) -> tuple[VirtualMachine, bool]:
    """The VM if `user` may open its console, and whether only to watch it (a viewer it was
    shared with); Http404 otherwise, as for anyone else."""
    vm = VirtualMachine.objects.select_related("host", "owner").filter(pk=vm_id).first()
    if vm is not None and vm_may_use(user, vm):
        return vm, False
    if vm is not None and vm_shared_with(user, vm):
        return vm, True
    raise Http404("No such virtual machine.")


def vm_get_for_user(*, user: User, vm_id: int) -> VirtualMachine:
    """The VM if `user` may use it; Http404 otherwise (also for VMs that do not exist)."""
    vm = VirtualMachine.objects.visible_to(user).select_related("host", "owner").filter(pk=vm_id).first()
    if vm is None:
        raise Http404("No such virtual machine.")
    return vm
