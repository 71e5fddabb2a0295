"""VM actions (start, shutdown, power off, reboot) and their live status, through the hypervisor."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import transaction
from django.db.models import Q

from console.domainxml import domain_xml_build, graphics_endpoint, graphics_password_new
from console.errors import VmStateConflict
from console.globalconfig import CLIPBOARD, CONSOLE_MODE, config_value
from console.hosts import host_takes_vms_check
from console.hypervisor import (
    ACTIVE_STATES,
    MISSING,
    DomainNotFound,
    DomainNotRunning,
    HypervisorError,
    hypervisor_for,
)
from console.models import VirtualMachine, VmEvent
from console.tickets import console_tickets_revoke

if TYPE_CHECKING:
    from console.auth import User

logger = logging.getLogger(__name__)


VmActionRefused = VmStateConflict  # the action does not apply to the VM in its current state


@dataclass(frozen=True)
class VmStatus:
    state: str  # a libvirt state in words, or "missing"
    running_mode: str | None  # the console protocol the running domain has
    effective_mode: str  # what a start would use now

    @property
    def is_active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def restart_required(self) -> bool:
        return self.is_active and self.running_mode is not None and self.running_mode != self.effective_mode


def _running_mode(vm: VirtualMachine) -> str | None:
    try:
        endpoint = graphics_endpoint(hypervisor_for(vm.host).xml(vm.name))
    except DomainNotFound:
        return None
    return endpoint.type if endpoint else None


def vm_status(vm: VirtualMachine) -> VmStatus:
    """The VM's live state and console modes."""
    state = hypervisor_for(vm.host).state(vm.name)
    running = _running_mode(vm) if state in ACTIVE_STATES else None
    return VmStatus(
        state=state,
        running_mode=running,
        effective_mode=vm.effective_console_mode(config_value(CONSOLE_MODE)),
    )


def vm_statuses(vms: Iterable[VirtualMachine]) -> dict[int, VmStatus | HypervisorError]:
    """Live status of many VMs: one settings query, one libvirt call per host; a host's error
    stands for its VMs. A running VM's protocol is the one the portal started it with (reading
    each one's XML would cost a libvirt call per VM; `vm_status` reads it)."""
    global_mode = config_value(CONSOLE_MODE)
    by_host: dict[int, list[VirtualMachine]] = {}
    for vm in vms:
        by_host.setdefault(vm.host_id, []).append(vm)
    result: dict[int, VmStatus | HypervisorError] = {}
    for host_vms in by_host.values():
        try:
            states = hypervisor_for(host_vms[0].host).states()
        except HypervisorError as exc:
            result.update({vm.id: exc for vm in host_vms})
            continue
        for vm in host_vms:
            state = states.get(vm.name, MISSING)
            running = (vm.started_mode or None) if state in ACTIVE_STATES else None
            result[vm.id] = VmStatus(state, running, vm.effective_console_mode(global_mode))
    return result


LIST_PAGE_SIZE = 50
LIST_SORTS = ("name", "-name", "host", "state", "owner")


@dataclass(frozen=True)
class VmListQuery:
    """The VM list's search, filters, sort and page, from a request's query string."""

    q: str = ""
    host: str = ""
    state: str = ""
    owner: str = ""
    mode: str = ""
    sort: str = "name"
    page: int = 1

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> VmListQuery:
        sort = params.get("sort", "name")
        try:
            page = max(1, int(params.get("page", "1")))
        except ValueError:
            page = 1
        return cls(
            q=params.get("q", "").strip()[:100],
            host=params.get("host", "")[:64],
            state=params.get("state", "")[:32],
            owner=params.get("owner", "")[:150],
            mode=params.get("mode", "")[:8],
            sort=sort if sort in LIST_SORTS else "name",
            page=page,
        )


def vm_list_page(
    user: User, query: VmListQuery
) -> tuple[list[tuple[VirtualMachine, VmStatus | HypervisorError]], int]:
    """One page of the VMs `user` may see that match `query`, with their live state, and how
    many match in all. The database filters what it can (search, host, owner, console mode);
    the state needs one libvirt call per host of the matching VMs, not one per VM."""
    vms = VirtualMachine.objects.visible_to(user).select_related("host", "owner")
    if query.q:
        vms = vms.filter(Q(name__icontains=query.q) | Q(description__icontains=query.q))
    if query.host:
        vms = vms.filter(host__name=query.host)
    if query.owner and user.is_staff:
        vms = vms.filter(owner__username=query.owner)
    if query.mode:
        vms = vms.filter(console_mode=query.mode)
    start = (query.page - 1) * LIST_PAGE_SIZE
    if not query.state and query.sort != "state":  # the database pages: the work is the page's
        order = {"host": ["host__name", "name"], "owner": ["owner__username", "name"], "-name": ["-name"]}
        shown = list(vms.order_by(*order.get(query.sort, ["name"]))[start : start + LIST_PAGE_SIZE])
        statuses = vm_statuses(shown)
        return [(vm, statuses[vm.id]) for vm in shown], vms.count()
    matching = list(vms.order_by("name"))
    statuses = vm_statuses(matching)  # one libvirt call per host, whatever the count
    rows = [(vm, statuses[vm.id]) for vm in matching]
    if query.state:
        rows = [row for row in rows if _state_of(row[1]) == query.state]
    if query.sort == "state":
        rows.sort(key=lambda row: (_state_of(row[1]), row[0].name))
    return rows[start : start + LIST_PAGE_SIZE], len(rows)


def _state_of(status: VmStatus | HypervisorError) -> str:
    return status.state if isinstance(status, VmStatus) else "unknown"


def vms_restart_required_count() -> int:
    """How many running VMs that inherit the global mode run another protocol than it says."""
    inheriting = VirtualMachine.objects.filter(console_mode="inherit").select_related("host")
    statuses = vm_statuses(inheriting)
    return sum(1 for status in statuses.values() if isinstance(status, VmStatus) and status.restart_required)


def _record(vm: VirtualMachine, user: User, action: str, detail: str = "") -> None:
    VmEvent.objects.create(vm=vm, user=user, action=action, detail=detail)


def vm_start(*, vm: VirtualMachine, user: User) -> str:
    """Define the VM's domain from fresh XML for its effective console mode and start it.

    Returns the console mode it started with.
    """
    return _start(vm, user, "start")


def demo_guest_boot() -> dict[str, object]:
    """The VM fields that boot the demo guest (bin/build-guest: a shell on the screen and the
    serial console): the demo VM's, and the tests' and bench's guests'."""
    return {
        "memory_mib": 192,
        "kernel": f"{settings.GUEST_DIR}/vmlinuz",
        "initrd": f"{settings.GUEST_DIR}/initrd.img",
        "kernel_cmdline": "console=tty0 console=ttyS0",
    }


def serial_log_path(vm: VirtualMachine) -> str:
    """Where the VM's host keeps its serial log (virtlogd; the name is a validated libvirt name)."""
    return f"{settings.SERIAL_LOG_DIR}/{vm.name}-serial0.log"


def vm_serial_log(*, vm: VirtualMachine, max_bytes: int) -> bytes:
    """The end of what the VM's guest printed on its serial port, across reboots and
    reconnects (virtlogd's log): b"" when there is none yet."""
    return hypervisor_for(vm.host).read_log(serial_log_path(vm), max_bytes=max_bytes)


def _start(vm: VirtualMachine, user: User, action: str) -> str:
    host_takes_vms_check(vm.host)
    mode = vm.effective_console_mode(config_value(CONSOLE_MODE))
    xml = domain_xml_build(
        vm,
        mode=mode,
        listen_address=vm.host.console_listen_address,
        password=graphics_password_new(mode),
        clipboard=config_value(CLIPBOARD),
        serial_log=serial_log_path(vm),
    )
    hypervisor = hypervisor_for(vm.host)
    state = hypervisor.state(vm.name)
    if state in ACTIVE_STATES:
        raise VmActionRefused(f"{vm.name} is already {state}.")
    hypervisor.define_and_start(vm.name, xml)
    with transaction.atomic():
        VirtualMachine.objects.filter(pk=vm.pk).update(started_mode=mode)
        vm.started_mode = mode
        _record(vm, user, action, f"console {mode}")
    logger.info("started %s on %s with a %s console", vm.name, vm.host.name, mode)
    return mode


def vm_shutdown(*, vm: VirtualMachine, user: User) -> None:
    """Ask the guest OS to shut down (ACPI); a guest without one ignores it."""
    try:
        hypervisor_for(vm.host).shutdown(vm.name)
    except (DomainNotRunning, DomainNotFound):
        raise VmActionRefused(f"{vm.name} is not running.") from None
    _record(vm, user, "shutdown")


def vm_poweroff(*, vm: VirtualMachine, user: User) -> None:
    """Power the VM off at once, like pulling the plug."""
    try:
        hypervisor_for(vm.host).destroy(vm.name)
    except (DomainNotRunning, DomainNotFound):
        raise VmActionRefused(f"{vm.name} is not running.") from None
    console_tickets_revoke(vm=vm, reason="powered off")
    _record(vm, user, "poweroff")


def vm_reboot(*, vm: VirtualMachine, user: User) -> str:
    """Restart the VM's machine (power off, then start from fresh XML), applying a changed mode.

    A guest-initiated reboot keeps the QEMU process and so its console protocol; only a new
    process picks up a new one, hence the power cycle.
    """
    host_takes_vms_check(vm.host)  # before the power-off: it could not start again there
    hypervisor = hypervisor_for(vm.host)
    if hypervisor.state(vm.name) not in ACTIVE_STATES:
        raise VmActionRefused(f"{vm.name} is not running; start it instead.")
    try:
        hypervisor.destroy(vm.name)
    except DomainNotRunning:
        pass  # it stopped by itself meanwhile; starting it is what was asked for
    console_tickets_revoke(vm=vm, reason="restarted")
    return _start(vm, user, "reboot")
