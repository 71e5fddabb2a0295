"""manage.py hostmaintenance ID: move a host's running VMs away (the portal starts it)."""

import logging

from django.core.management.base import BaseCommand, CommandParser

from console.maintenance import host_maintenance_run


class Command(BaseCommand):
    help = (
        "Empty the host of the maintenance the portal recorded as ID (HostMaintenance): its "
        "running VMs live-migrate, one at a time, to the least loaded other host that answers. "
        "The admin action and the API start it this way; what moved and what stayed goes to the record."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("maintenance_id", type=int)

    def handle(self, *args: str, maintenance_id: int, **options: object) -> None:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        host_maintenance_run(maintenance_id)
