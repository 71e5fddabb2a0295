"""manage.py demosetup: the demo admin and VM of the embedded default (idempotent)."""

import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser

from console.models import Host, VirtualMachine
from console.vms import demo_guest_boot


class Command(BaseCommand):
    help = (
        "Create, once, the staff user 'admin' and a VM 'demo' on the local host that boots the "
        "demo guest (bin/build-guest: Linux with a shell on the screen and the serial console)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--vm-name", default="demo", help="name of the demo VM (default: demo)")

    def handle(self, *args: str, vm_name: str, **options: object) -> None:
        host, _ = Host.objects.get_or_create(uri=settings.LIBVIRT_URI, defaults={"name": "local"})
        User = get_user_model()
        admin = User.objects.filter(username="admin").first()
        if admin is None:
            password = settings.DEMO_PASSWORD or secrets.token_urlsafe(12)
            admin = User.objects.create_superuser("admin", password=password)
            shown = "from DEMO_PASSWORD" if settings.DEMO_PASSWORD else password
            self.stdout.write(f"Created the staff user 'admin', password: {shown}")
        elif settings.DEMO_PASSWORD and not admin.check_password(settings.DEMO_PASSWORD):
            admin.set_password(settings.DEMO_PASSWORD)
            admin.save(update_fields=["password"])
            self.stdout.write("Set the password of 'admin' from DEMO_PASSWORD.")
        else:
            self.stdout.write(
                "User 'admin' exists (its password was printed when it was created; "
                "change it with: manage.py changepassword admin)."
            )
        _, created = VirtualMachine.objects.get_or_create(
            host=host,
            name=vm_name,
            defaults={
                "owner": admin,
                **demo_guest_boot(),
                "vcpus": 1,
                "serial_console": True,
                "description": "A tiny Linux (a Debian kernel and busybox): a root shell on the "
                "screen and on the serial console.",
            },
        )
        if created:
            self.stdout.write(f"Created the VM '{vm_name}' on {host.name} ({host.uri}).")
