"""The one access check: who may see and operate a VM, and open its console.

Every entry point (pages, actions, tickets, the WebSocket proxy, .vv downloads) goes
through here; a VM someone may not use is reported as not found, so its existence leaks not.

Rights: the VM's owner and staff have them all; otherwise the highest role granted (VmGrant)
on the VM or on its host, to the user or to one of their groups: viewer (watch the console),
operator (console, serial, .vv, power, typing) or admin (that and sharing), or given by a
console share for its time box (viewer or operator). Open consoles are rechecked through here,
so a grant removed, or a share ended or expired, ends them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.db.models import Q, QuerySet
from django.http import Http404

from console.models import ConsoleShare, VirtualMachine, VmGrant

if TYPE_CHECKING:
    from console.auth import User


ROLE_RANK: dict[str, int] = {VmGrant.Role.VIEWER: 1, VmGrant.Role.OPERATOR: 2, VmGrant.Role.ADMIN: 3}


def grants_for(user: User) -> Q:
    """The grants that apply to `user`: to them, or to a group they are in."""
    return Q(user=user) | Q(group__in=user.groups.all())


def vm_role(user: User, vm: VirtualMachine) -> str | None:
    """`user`'s highest role on `vm`: "admin" for its owner and staff, else the highest granted
    on it or its host (None: no right). Read from the database each time (rechecks)."""
    if not user.is_authenticated or not user.is_active:
        return None
    if vm.usable_by(user):
        return VmGrant.Role.ADMIN
    on_it = Q(vm=vm) | Q(host_id=vm.host_id)
    roles = [str(r) for r in VmGrant.objects.filter(grants_for(user), on_it).values_list("role", flat=True)]
    roles += [
        str(r) for r in ConsoleShare.objects.live().filter(vm=vm, viewer=user).values_list("role", flat=True)
    ]
    return max(roles, key=lambda role: ROLE_RANK[role], default=None)


def vm_may_use(user: User, vm: VirtualMachine) -> bool:
    """Whether `user` may operate `vm` and open its console: its owner, staff, or an operator
    or admin by grant."""
    return vm_role(user, vm) in (VmGrant.Role.OPERATOR, VmGrant.Role.ADMIN)


def vm_may_administer(user: User, vm: VirtualMachine) -> bool:
    """Whether `user` may share `vm`'s console: its owner, staff, or an admin by grant."""
    return vm_role(user, vm) == VmGrant.Role.ADMIN


def vm_shared_with(user: User, vm: VirtualMachine) -> bool:
    """Whether `user` may watch the VM's console (read-only) now: a share, or a viewer grant."""
    return vm_role(user, vm) is not None


def vms_administered_by(user: User) -> QuerySet[VirtualMachine]:
    """The VMs `user` holds the admin role on without being staff: theirs, or granted admin on
    them or their host (to them or a group of theirs)."""
    if not user.is_authenticated or not user.is_active:
        return VirtualMachine.objects.none()
    admin = VmGrant.objects.filter(grants_for(user), role=VmGrant.Role.ADMIN)
    return VirtualMachine.objects.filter(
        Q(owner=user) | Q(pk__in=admin.values("vm_id")) | Q(host_id__in=admin.values("host_id"))
    )


def vms_watchable_by(user: User) -> QuerySet[VirtualMachine]:
    """The VMs `user` may only watch: shared with them, or granted as a viewer."""
    if not user.is_authenticated or not user.is_active:
        return VirtualMachine.objects.none()
    viewer = VmGrant.objects.filter(grants_for(user), role=VmGrant.Role.VIEWER)
    shared = ConsoleShare.objects.live().filter(viewer=user, role=ConsoleShare.Role.VIEWER)
    return (
        VirtualMachine.objects.filter(
            Q(pk__in=shared.values("vm_id"))
            | Q(pk__in=viewer.values("vm_id"))
            | Q(host_id__in=viewer.values("host_id"))
        )
        .exclude(pk__in=VirtualMachine.objects.visible_to(user).values("pk"))
        .distinct()
    )


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
