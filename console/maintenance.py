"""Host maintenance: a host that takes no VMs while it is patched, emptied by live migration.

`host_maintenance_enter` marks the host (no VM starts or moves there from then on) and moves
its running VMs away in a process of its own (`manage.py hostmaintenance`), one at a time,
each to the least loaded other host that answers; `HostMaintenance.summary` says what moved
where and what stayed, and why. Their consoles follow as for any move (see livemigration).
`host_maintenance_leave` is the one action that makes the host take VMs again.
"""

from __future__ import annotations

import logging
import subprocess
from datetime import timedelta
from typing import TYPE_CHECKING

from django.db import connection
from django.utils import timezone

from console.errors import PortalError, StaffOnly, VmStateConflict
from console.hypervisor import HypervisorError, hypervisor_for
from console.hypervisor.base import ACTIVE_STATES
from console.livemigration import command_in_background, vm_migrate
from console.models import Host, HostMaintenance, LiveMigration, VirtualMachine

if TYPE_CHECKING:
    from console.auth import User

logger = logging.getLogger(__name__)

STALE_AFTER = timedelta(hours=2)  # an emptying recorded as under way for longer died unrecorded
NO_TARGET = "no other host takes it: a host needs a migration address, to be out of maintenance and to answer"


def host_maintenance_enter(
    *, host: Host, user: User, wait: bool = False, in_process: bool = False
) -> HostMaintenance:
    """Put `host` in maintenance (staff only) and start moving its running VMs away; `wait`
    for the last one (scripts). Entering again, once emptying ended, retries what stayed."""
    _staff(user)
    emptying = host.maintenances.filter(state=HostMaintenance.State.EMPTYING, ended_at=None)
    if emptying.filter(started_at__gte=timezone.now() - STALE_AFTER).exists():
        raise VmStateConflict(f"{host.name} is already being emptied (admin: Host maintenances).")
    Host.objects.filter(pk=host.pk).update(maintenance=True)
    host.maintenance = True
    host.maintenances.filter(ended_at=None).update(state=HostMaintenance.State.ENDED, ended_at=timezone.now())
    maintenance = HostMaintenance.objects.create(host=host, requested_by=user)
    logger.info("%s entered maintenance (%s)", host.name, user.get_username())
    if in_process:
        host_maintenance_run(maintenance.pk)
    else:
        waiter = command_in_background("hostmaintenance", maintenance.pk, settle=_settle_after)
        if wait:
            waiter.join()
    maintenance.refresh_from_db()
    return maintenance


def host_maintenance_leave(*, host: Host, user: User) -> HostMaintenance | None:
    """End `host`'s maintenance (staff only): VMs start and move there again. A move under way
    finishes; no further VM is moved away."""
    _staff(user)
    Host.objects.filter(pk=host.pk).update(maintenance=False)
    host.maintenance = False
    latest = host.maintenances.filter(ended_at=None).first()
    if latest is not None:
        emptying = latest.state == HostMaintenance.State.EMPTYING
        HostMaintenance.objects.filter(pk=latest.pk).update(
            state=HostMaintenance.State.ENDED if emptying else latest.state, ended_at=timezone.now()
        )
        latest.refresh_from_db()
    logger.info("%s left maintenance (%s)", host.name, user.get_username())
    return latest


def host_maintenance_run(maintenance_id: int) -> None:
    """Move the host's running VMs away, one at a time (`manage.py hostmaintenance`)."""
    maintenance = HostMaintenance.objects.select_related("host", "requested_by").get(pk=maintenance_id)
    host, user, summary = maintenance.host, maintenance.requested_by, []
    try:
        for vm in VirtualMachine.objects.filter(host=host).select_related("host").order_by("name"):
            if not Host.objects.filter(pk=host.pk, maintenance=True).exists():
                summary.append({"vm": "…", "stayed": "maintenance ended before every VM was tried"})
                break
            outcome = _move_away(vm, user)
            if outcome is not None:
                summary.append({"vm": vm.name, **outcome})
                HostMaintenance.objects.filter(pk=maintenance_id).update(summary=summary)
    finally:
        stayed = any("stayed" in entry for entry in summary)
        HostMaintenance.objects.filter(pk=maintenance_id, state=HostMaintenance.State.EMPTYING).update(
            state=HostMaintenance.State.INCOMPLETE if stayed else HostMaintenance.State.EMPTY,
            emptied_at=timezone.now(),
            summary=summary,
        )
        HostMaintenance.objects.filter(pk=maintenance_id, emptied_at=None).update(emptied_at=timezone.now())
    logger.info("%s emptied: %s", host.name, summary)


def _move_away(vm: VirtualMachine, user: User | None) -> dict[str, str] | None:
    """Move one VM off its host: {"moved_to": host} or {"stayed": why}; None when it does not run."""
    try:
        state = hypervisor_for(vm.host).state(vm.name)
    except HypervisorError as exc:
        return {"stayed": str(exc)}
    if state not in ACTIVE_STATES:
        return None
    target = least_loaded_host(excluding=vm.host)
    if target is None:
        return {"stayed": NO_TARGET}
    if user is None:
        return {"stayed": "the user who asked for maintenance no longer exists"}
    try:
        migration = vm_migrate(vm=vm, target=target, user=user, in_process=True)
    except PortalError as exc:
        return {"stayed": exc.message}
    if migration.state == LiveMigration.State.DONE:
        return {"moved_to": target.name}
    return {"stayed": f"the move to {target.name} failed: {migration.error}"}


def least_loaded_host(*, excluding: Host) -> Host | None:
    """Of the hosts VMs may move to now (a migration address, not in maintenance), the one that
    answers with the fewest running domains (by name on a tie)."""
    candidates = Host.objects.filter(maintenance=False).exclude(migration_address=None)
    loads = []
    for host in candidates.exclude(pk=excluding.pk).order_by("name"):
        try:
            states = hypervisor_for(host).states()
        except HypervisorError as exc:
            logger.info("%s is no place for a VM now: %s", host.name, exc)
            continue
        loads.append((sum(state in ACTIVE_STATES for state in states.values()), host.name, host))
    return min(loads, key=lambda load: load[:2])[2] if loads else None


def _settle_after(emptier: subprocess.Popen, maintenance_id: int) -> None:
    """Once the emptying process ended: one that died unfinished is recorded as such."""
    try:
        code = emptier.wait()
        HostMaintenance.objects.filter(pk=maintenance_id, emptied_at=None).update(
            state=HostMaintenance.State.INCOMPLETE,
            emptied_at=timezone.now(),
        )
        if code:
            logger.warning("emptying host maintenance %s ended with exit status %s", maintenance_id, code)
    finally:
        connection.close()


def _staff(user: User) -> None:
    if not (user.is_active and user.is_staff):
        raise StaffOnly("Only staff put hosts in maintenance.")


def host_maintenance_payload(maintenance: HostMaintenance) -> dict:
    """A maintenance as the API and admin show it."""
    return {
        "id": maintenance.pk,
        "host": maintenance.host.name,
        "state": maintenance.state,
        "in_maintenance": maintenance.ended_at is None,
        "started_at": maintenance.started_at.isoformat(),
        "emptied_at": maintenance.emptied_at.isoformat() if maintenance.emptied_at else None,
        "ended_at": maintenance.ended_at.isoformat() if maintenance.ended_at else None,
        "summary": maintenance.summary,
    }
