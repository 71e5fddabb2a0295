"""Live migration: a running VM moved to another host the portal knows, its consoles following.

`vm_migrate` checks and records the move (`LiveMigration`) and runs it in a thread of its own:
libvirt's managed migration, this process holding both hosts' connections, QEMU to QEMU over
the target's migration address only. Its progress goes to the record as it comes; at the end
the VM's record names its new host (or the record says why it stayed where it was).

Consoles follow: while a move is under way no new ticket is issued (a 503 the pages retry);
a console whose source closes during or just after a move ends with End.VM_MOVED, after which
the page reconnects by itself, with a fresh ticket, through the new host.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.db.models import QuerySet
from django.utils import timezone

from console.errors import Invalid, StaffOnly, VmMoving
from console.graphics import graphics_password_moved
from console.hosts import host_takes_vms_check
from console.hypervisor import HypervisorError, hypervisor_for
from console.hypervisor.base import ACTIVE_STATES
from console.models import ConsoleProtocol, ConsoleSession, Host, LiveMigration, VirtualMachine, VmEvent
from console.notices import console_sessions_notify
from console.sessions import open_sessions

if TYPE_CHECKING:
    from console.auth import User

logger = logging.getLogger(__name__)

MOVED_RECENTLY = timedelta(seconds=60)  # a console closing this soon after a move followed it
SPICE_CLOSE_SECONDS = 5.0
PROGRESS_SECONDS = 0.5


def vm_migrate(
    *, vm: VirtualMachine, target: Host, user: User, wait: bool = False, in_process: bool = False
) -> LiveMigration:
    """Start moving the running `vm` to `target` (staff only); `wait` for the end (scripts).

    The move runs in a process of its own (`manage.py livemigrate`): a long libvirt call that
    neither a worker's restart nor a crash in libvirt's client (seen: libvirt 9.0's, in a worker
    holding other connections and console tunnels to the source) can cut short or spread from.
    `in_process` runs it here instead (the tests, on their own database)."""
    if not (user.is_active and user.is_staff):
        raise StaffOnly("Only staff move VMs between hosts.")
    if target.pk == vm.host_id:
        raise Invalid(f"{vm.name} already runs on {target.name}.", field="host")
    host_takes_vms_check(target)
    if not target.migration_address:
        raise Invalid(
            f"{target.name} has no migration address: set it in admin (Hosts) to move VMs there.",
            field="host",
        )
    if _running(LiveMigration.objects.filter(vm=vm)).exists():
        raise VmMoving(f"{vm.name} is already moving.")
    state = hypervisor_for(vm.host).state(vm.name)
    if state not in ACTIVE_STATES:
        raise Invalid(f"{vm.name} is {state}: only a running VM moves (start it on the host you want).")
    migration = LiveMigration.objects.create(vm=vm, source=vm.host, target=target, requested_by=user)
    VmEvent.objects.create(vm=vm, user=user, action="migrate", detail=f"from {vm.host.name} to {target.name}")
    if in_process:
        live_migration_run(migration.pk)
    else:
        waiter = command_in_background("livemigrate", migration.pk, settle=_settle_after)
        if wait:
            waiter.join(settings.MIGRATION_TIMEOUT_SECONDS + 60)
    migration.refresh_from_db()
    return migration


def command_in_background(
    command: str, record_id: int, *, settle: Callable[[subprocess.Popen, int], None]
) -> threading.Thread:
    """Run `manage.py command record_id` in a process of its own (its own session: a worker's
    restart does not stop it); `settle(process, record_id)` runs in the returned thread once it
    ends."""
    process = subprocess.Popen(  # noqa: S603 - our own command, an integer argument
        [sys.executable, "manage.py", command, str(record_id)],
        cwd=settings.BASE_DIR,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    waiter = threading.Thread(target=settle, args=(process, record_id), name=f"{command}-{record_id}")
    waiter.daemon = True
    waiter.start()
    return waiter


def live_migration_run(migration_id: int) -> None:
    """Carry out a recorded move (`manage.py livemigrate`); a move that ends without a word
    (the process killed) is recorded as failed."""
    try:
        _run(migration_id)
    finally:
        LiveMigration.objects.filter(pk=migration_id, state=LiveMigration.State.RUNNING).update(
            state=LiveMigration.State.FAILED, ended_at=timezone.now(), error="the move stopped unfinished"
        )


def _settle_after(mover: subprocess.Popen, migration_id: int) -> None:
    """Once the move's process ended: if it died without recording the outcome, read it from
    the hosts (the VM running on the target: moved; otherwise it stayed)."""
    try:
        code = mover.wait()
        migration = LiveMigration.objects.select_related("vm", "target").filter(pk=migration_id).first()
        if migration is None or migration.state != LiveMigration.State.RUNNING:
            return
        assert migration.target is not None  # noqa: S101 - set when the move was recorded
        try:
            arrived = hypervisor_for(migration.target).state(migration.vm.name) in ACTIVE_STATES
        except HypervisorError:
            arrived = False
        if arrived:
            _moved(migration, {"data_total": 0, "downtime_ms": 0, "time_elapsed_ms": 0}, {"total": 0})
            return
        LiveMigration.objects.filter(pk=migration_id, state=LiveMigration.State.RUNNING).update(
            state=LiveMigration.State.FAILED,
            ended_at=timezone.now(),
            error=f"the move's process ended unfinished (exit status {code})",
        )
    finally:
        connection.close()


def _run(migration_id: int) -> None:
    migration = LiveMigration.objects.select_related("vm", "source", "target").get(pk=migration_id)
    vm, source, target = migration.vm, migration.source, migration.target
    assert source is not None and target is not None and target.migration_address  # noqa: S101 - checked
    progress = {"total": 0, "remaining": 0}
    started = time.monotonic()
    _spice_consoles_closed(vm)

    def report(total: int, remaining: int) -> None:  # from libvirt's watcher thread
        progress.update(total=total, remaining=remaining)

    with ThreadPoolExecutor(1) as pool:
        moving = pool.submit(
            hypervisor_for(source).migrate,
            vm.name,
            to=hypervisor_for(target),
            address=target.migration_address,
            timeout=settings.MIGRATION_TIMEOUT_SECONDS,
            progress=report,
        )
        while not moving.done():
            time.sleep(PROGRESS_SECONDS)
            LiveMigration.objects.filter(pk=migration_id).update(
                data_total=progress["total"], data_remaining=progress["remaining"]
            )
        try:
            took = moving.result()
        except HypervisorError as exc:
            logger.warning("%s was not moved to %s: %s", vm.name, target.name, exc)
            close_old_connections()
            LiveMigration.objects.filter(pk=migration_id).update(
                state=LiveMigration.State.FAILED, ended_at=timezone.now(), error=str(exc)[:255]
            )
            return
    _moved(migration, took, progress)
    logger.info(
        "moved %s from %s to %s in %.1f s", vm.name, source.name, target.name, time.monotonic() - started
    )


def _moved(migration: LiveMigration, took: dict[str, int], progress: dict[str, int]) -> None:
    """The VM runs on the target now: its record says so, and the password is the domain's there.

    Recorded once libvirt's move has returned and its connections are closed, not as soon as
    the domain runs there: consoles opened on the target while the move was still tidying up
    (the clipboard agent plugged back in) crashed libvirt 9.0's client in the worker
    (segfault in libvirt.so, seen in a fresh-clone run)."""
    vm, target = migration.vm, migration.target
    assert target is not None  # noqa: S101 - set when the move was recorded
    domain_id = hypervisor_for(target).domain_id(vm.name)
    with transaction.atomic():
        VirtualMachine.objects.filter(pk=vm.pk).update(host=target)
        LiveMigration.objects.filter(pk=migration.pk, ended_at=None).update(ended_at=timezone.now())
        LiveMigration.objects.filter(pk=migration.pk).update(
            state=LiveMigration.State.DONE,
            data_total=took["data_total"] or progress["total"],
            data_remaining=0,
            downtime_ms=took["downtime_ms"] or None,
            elapsed_ms=took["time_elapsed_ms"] or None,
        )
        graphics_password_moved(vm=vm, domain_id=domain_id)


def vm_moving_to(vm_id: int) -> str | None:
    """The host the VM is moving to, or moved to a moment ago (a console closing now followed it)."""
    recent = timezone.now() - MOVED_RECENTLY
    migration = (
        LiveMigration.objects.filter(
            vm_id=vm_id, state__in=[LiveMigration.State.RUNNING, LiveMigration.State.DONE]
        )
        .filter(started_at__gte=timezone.now() - timedelta(seconds=settings.MIGRATION_TIMEOUT_SECONDS + 60))
        .exclude(state=LiveMigration.State.DONE, ended_at__lt=recent)
        .select_related("target")
        .first()
    )
    return migration.target.name if migration is not None and migration.target is not None else None


def spice_consoles_moving(vm_ids: set[int]) -> set[int]:
    """Of these VMs, those moving now: their SPICE consoles end as the move starts (see
    `_spice_consoles_closed`)."""
    if not vm_ids:
        return set()
    running = _running(LiveMigration.objects.filter(vm_id__in=vm_ids))
    return set(running.values_list("vm_id", flat=True))


def _running(migrations: QuerySet[LiveMigration]) -> QuerySet[LiveMigration]:
    """Moves under way (one recorded as running for longer than it may take is not)."""
    since = timezone.now() - timedelta(seconds=settings.MIGRATION_TIMEOUT_SECONDS + 60)
    return migrations.filter(state=LiveMigration.State.RUNNING, started_at__gte=since)


def _spice_consoles_closed(vm: VirtualMachine) -> None:
    """End the VM's open SPICE consoles before it moves, and wait (a few seconds at most) until
    they are closed; their pages reconnect to the new host after the move.

    Why not keep them open to the switch, as VNC's are: with a SPICE client connected to a
    remote source, libvirt 9.0's client crashed (segfault in virDomainMigrate3, reproduced by
    tests/e2e/test_migration.py), taking the worker with it."""
    sessions = open_sessions(ConsoleSession.objects.filter(vm=vm, protocol=ConsoleProtocol.SPICE))
    ids = list(sessions.values_list("pk", flat=True))
    if not ids:
        return
    console_sessions_notify(ids)
    deadline = time.monotonic() + SPICE_CLOSE_SECONDS
    while ConsoleSession.objects.filter(pk__in=ids, ended_at__isnull=True).exists():
        if time.monotonic() > deadline:
            logger.warning("moving %s with SPICE consoles still open", vm.name)
            return
        time.sleep(0.1)


def vm_migration_check(vm: VirtualMachine) -> None:
    """No console ticket while the VM moves: VmMoving (503, retried by the pages)."""
    migration = _running(LiveMigration.objects.filter(vm=vm)).select_related("target").first()
    if migration is not None:
        target = migration.target.name if migration.target else "another host"
        raise VmMoving(f"{vm.name} is moving to {target}; its console opens there in a moment.")


def live_migration_payload(migration: LiveMigration) -> dict:
    """A move as pages and the API show it."""
    return {
        "id": migration.pk,
        "state": migration.state,
        "source": migration.source.name if migration.source else None,
        "target": migration.target.name if migration.target else None,
        "percent": migration.percent,
        "data_total": migration.data_total,
        "data_remaining": migration.data_remaining,
        "downtime_ms": migration.downtime_ms,
        "elapsed_ms": migration.elapsed_ms,
        "started_at": migration.started_at.isoformat(),
        "ended_at": migration.ended_at.isoformat() if migration.ended_at else None,
        "error": migration.error,
    }
