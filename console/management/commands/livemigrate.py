"""manage.py livemigrate ID: carry out a recorded live migration (the portal starts it)."""

import faulthandler
import logging

from django.core.management.base import BaseCommand, CommandParser

from console.livemigration import live_migration_run


class Command(BaseCommand):
    help = (
        "Carry out the live migration the portal recorded as ID (LiveMigration), in a process of "
        "its own: the portal's pages and API start it this way; its progress and outcome go to "
        "the record."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("migration_id", type=int)

    def handle(self, *args: str, migration_id: int, **options: object) -> None:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        faulthandler.enable()  # a crash in libvirt's client says where, in the worker's log
        live_migration_run(migration_id)
