"""manage.py importdomains --host NAME [--owner USER]: adopt domains already defined on a host."""

import uuid
import xml.etree.ElementTree as ET

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from console.hypervisor import HypervisorError, hypervisor_for
from console.models import Host, VirtualMachine


def domain_fields(xml: str) -> dict:
    """What a VM row takes from a domain's persistent XML."""
    root = ET.fromstring(xml)
    memory_mib = int(root.findtext("memory", "65536")) // 1024  # libvirt writes KiB
    disk = root.find("./devices/disk[@device='disk']/source")
    graphics = root.find("./devices/graphics")
    return {
        "uuid": uuid.UUID(root.findtext("uuid")),
        "description": root.findtext("description", ""),
        "vcpus": int(root.findtext("vcpu", "1")),
        "memory_mib": max(memory_mib, 16),
        "disk_image": disk.get("file", "") if disk is not None else "",
        "boot_menu": root.find("./os/bootmenu[@enable='yes']") is not None,
        "started_mode": graphics.get("type")
        if graphics is not None and graphics.get("type") in ("vnc", "spice")
        else "",
    }


class Command(BaseCommand):
    help = "Create VM records for the domains defined on a host that the portal does not know yet."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", required=True, help="the host's name in the portal")
        parser.add_argument("--owner", default="admin", help="user to own the imported VMs")

    def handle(self, *args: str, host: str, owner: str, **options: object) -> None:
        try:
            host_obj = Host.objects.get(name=host)
        except Host.DoesNotExist:
            names = ", ".join(Host.objects.values_list("name", flat=True)) or "none"
            raise CommandError(f"no host named {host!r}; known hosts: {names}") from None
        try:
            owner_obj = get_user_model().objects.get(username=owner)
        except get_user_model().DoesNotExist:
            raise CommandError(f"no user named {owner!r}; pass --owner") from None
        hypervisor = hypervisor_for(host_obj)
        try:
            domains = sorted(hypervisor.states())
        except HypervisorError as exc:
            raise CommandError(f"{host_obj.name} ({host_obj.uri}): {exc}") from None
        known = set(VirtualMachine.objects.filter(host=host_obj).values_list("name", flat=True))
        imported = 0
        for name in domains:
            if name in known:
                continue
            try:
                fields = domain_fields(hypervisor.xml(name, inactive=True))
                vm = VirtualMachine(name=name, host=host_obj, owner=owner_obj, **fields)
                vm.full_clean()
            except (HypervisorError, ValidationError, ValueError) as exc:
                self.stderr.write(f"skipped {name}: {exc}")
                continue
            vm.save()
            imported += 1
            self.stdout.write(f"imported {name}")
        self.stdout.write(f"{imported} domain(s) imported from {host_obj.name}.")
