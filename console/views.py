"""Pages: the VM list, a VM's details, and the actions on it. Views parse, authorize, call, respond."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from console.access import vm_get_for_user
from console.hypervisor import HypervisorError, HypervisorUnavailable
from console.models import VirtualMachine
from console.vms import (
    VmActionRefused,
    vm_poweroff,
    vm_reboot,
    vm_shutdown,
    vm_start,
    vm_status,
    vm_statuses,
)


@login_required
def vm_list(request):
    vms = list(VirtualMachine.objects.visible_to(request.user).select_related("host", "owner"))
    statuses = vm_statuses(vms)
    rows = [(vm, statuses[vm.id]) for vm in vms]
    unavailable = {
        (vm.host.name, status.message)
        for vm, status in rows
        if isinstance(status, HypervisorError)
    }
    return render(
        request,
        "console/vm_list.html",
        {"rows": rows, "unavailable": sorted(unavailable)},
        status=503 if unavailable else 200,
    )


@login_required
def vm_detail(request, vm_id: int):
    vm = vm_get_for_user(user=request.user, vm_id=vm_id)
    return render(
        request,
        "console/vm_detail.html",
        {"vm": vm, "status": vm_status(vm), "events": vm.events.select_related("user")[:10]},
    )


ACTIONS = {
    "start": (vm_start, "{vm} is starting with a {result} console."),
    "shutdown": (vm_shutdown, "{vm} was asked to shut down."),
    "poweroff": (vm_poweroff, "{vm} was powered off."),
    "reboot": (vm_reboot, "{vm} was restarted with a {result} console."),
}


@login_required
@require_POST
def vm_action(request, vm_id: str, action: str):
    vm = vm_get_for_user(user=request.user, vm_id=int(vm_id))
    run, done = ACTIONS[action]
    try:
        result = run(vm=vm, user=request.user)
    except VmActionRefused as exc:
        messages.warning(request, str(exc))
    except HypervisorUnavailable:
        raise
    except (HypervisorError, ValueError) as exc:
        messages.error(request, f"Could not {action} {vm.name}: {exc}")
    else:
        messages.success(request, done.format(vm=vm.name, result=(result or "").upper()))
    if request.POST.get("next") == "list":
        return redirect("console:vm-list")
    return redirect(vm)
