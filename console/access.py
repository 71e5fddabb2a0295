"""The one access check: who may see and operate a VM, and open its console.

Every entry point (pages, actions, tickets, the WebSocket proxy, .vv downloads) goes
through here; a VM someone may not use is reported as not found, so its existence leaks not.
"""

from __future__ import annotations

from django.http import Http404

from console.models import VirtualMachine


def vm_may_use(user, vm: VirtualMachine) -> bool:
    """Whether `user` may operate `vm` and open its console: its owner, or staff (both as
    loaded: callers that check a right again later load the rows again)."""
    return vm.usable_by(user)


def vm_get_for_user(*, user, vm_id: int) -> VirtualMachine:
    """The VM if `user` may use it; Http404 otherwise (also for VMs that do not exist)."""
    vm = VirtualMachine.objects.visible_to(user).select_related("host", "owner").filter(pk=vm_id).first()
    if vm is None:
        raise Http404("No such virtual machine.")
    return vm
