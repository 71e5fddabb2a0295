"""The VMs' graphics passwords: set by the portal, used only by its proxies.

The proxies authenticate to QEMU themselves (console/proxy/rfb.py, spice.py), so no browser,
page or API client ever holds a VM's password. One password per running domain, stored
encrypted (Fernet, with a key derived from SECRET_KEY), valid for CONSOLE_PASSWORD_SECONDS.
A ticket makes sure it stays valid for at least the ticket's life and a margin, rotating it
when less remains: under steady use a VM's password changes every few minutes, not at every
console opened, and a page's channels never race a rotation (see README, Security, for the
figures). A rotation that does meet a proxy mid-handshake costs that proxy one more try
with the new password, which the client never sees.

Rotations are serialized per VM by a row lock (PostgreSQL) or the write lock (SQLite) taken
before the libvirt call, so the database always holds the password QEMU has.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from console.domainxml import graphics_endpoint, graphics_password_new, graphics_password_xml
from console.hypervisor import hypervisor_for
from console.models import GraphicsSecret, VirtualMachine

if TYPE_CHECKING:
    from console.hypervisor.base import Hypervisor

logger = logging.getLogger(__name__)


def _fernet() -> Fernet:
    key = hashlib.sha256(b"console-portal graphics password\0" + settings.SECRET_KEY.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(key))


@dataclass(frozen=True)
class GraphicsPassword:
    password: str
    valid_until: datetime


def _decrypt(row: GraphicsSecret) -> str | None:
    if not row.password:
        return None
    try:
        return _fernet().decrypt(row.password.encode()).decode()
    except InvalidToken:  # SECRET_KEY changed since: rotate
        return None


def graphics_password_get(*, vm_id: int, domain_id: int | None) -> GraphicsPassword | None:
    """The password the proxies authenticate to the running domain with, if the portal set one
    on this very instance of it and it is still valid."""
    row = GraphicsSecret.objects.filter(vm_id=vm_id).first()
    if row is None or row.domain_id != domain_id or row.valid_until is None:
        return None
    password = _decrypt(row)
    if password is None or row.valid_until <= timezone.now():
        return None
    return GraphicsPassword(password, row.valid_until)


def graphics_password_ensure(
    *,
    vm: VirtualMachine,
    hypervisor: Hypervisor,
    live_xml: str,
    domain_id: int | None,
    min_valid: timedelta,
    force: bool = False,
    valid_for: timedelta | None = None,
) -> GraphicsPassword:
    """A password QEMU takes for at least `min_valid` more: the one it has, or a fresh one.

    `force` rotates even a valid one (a .vv file that names the host will carry it; a proxy
    that QEMU refused). `valid_for` is the new password's validity (CONSOLE_PASSWORD_SECONDS).
    """
    if valid_for is None:
        valid_for = timedelta(seconds=settings.CONSOLE_PASSWORD_SECONDS)
    try:
        GraphicsSecret.objects.get_or_create(vm=vm)
    except IntegrityError:  # made by another request meanwhile
        pass
    with transaction.atomic():
        now = timezone.now()
        # The lock first: the next rotation of this VM waits until this one is recorded.
        GraphicsSecret.objects.filter(vm=vm).update(locked_at=now)
        row = GraphicsSecret.objects.select_for_update().get(vm=vm)
        current = _decrypt(row)
        if (
            not force
            and current is not None
            and row.domain_id == domain_id
            and row.valid_until is not None
            and row.valid_until - now >= min_valid
        ):
            return GraphicsPassword(current, row.valid_until)
        endpoint = graphics_endpoint(live_xml)
        password = graphics_password_new(endpoint.type if endpoint else "vnc")
        valid_until = now + valid_for
        hypervisor.update_graphics(
            vm.name, graphics_password_xml(live_xml, password=password, valid_until=valid_until)
        )
        graphics_password_record(vm=vm, domain_id=domain_id, password=password, valid_until=valid_until)
    logger.info("graphics password of %s rotated (valid until %s)", vm.name, valid_until.isoformat())
    return GraphicsPassword(password, valid_until)


def graphics_password_record(
    *, vm: VirtualMachine, domain_id: int | None, password: str, valid_until: datetime
) -> None:
    """Record the password QEMU now has for the domain (a rotation's last step)."""
    GraphicsSecret.objects.update_or_create(
        vm=vm,
        defaults={
            "password": _fernet().encrypt(password.encode()).decode(),
            "domain_id": domain_id,
            "valid_until": valid_until,
            "rotated_at": timezone.now(),
        },
    )
    GraphicsSecret.objects.filter(vm=vm).update(rotations=F("rotations") + 1)


def graphics_password_for_proxy(
    *, vm: VirtualMachine, domain_id: int | None, refused: str = "", force: bool = False
) -> str:
    """The password a proxy authenticates to the running domain with: the one the portal holds,
    unless QEMU just `refused` that very one (or `force`): then a fresh one."""
    if not force:
        held = graphics_password_get(vm_id=vm.pk, domain_id=domain_id)
        if held is not None and held.password != refused:
            return held.password
    hypervisor = hypervisor_for(vm.host)
    return graphics_password_ensure(
        vm=vm,
        hypervisor=hypervisor,
        live_xml=hypervisor.xml(vm.name),
        domain_id=domain_id,
        min_valid=timedelta(seconds=settings.CONSOLE_TICKET_SECONDS),
        force=True,
    ).password


def graphics_password_forget(*, vm: VirtualMachine) -> None:
    """The VM stopped: its password is gone with its domain."""
    GraphicsSecret.objects.filter(vm=vm).update(password="", valid_until=None, domain_id=None)


def graphics_password_moved(*, vm: VirtualMachine, domain_id: int | None) -> None:
    """The VM moved to another host with its password (live migration carries it): the portal's
    copy now belongs to the domain there."""
    GraphicsSecret.objects.filter(vm=vm).update(domain_id=domain_id)
