"""manage.py spiceproxy --listen 127.0.0.1:3128: the HTTP CONNECT proxy .vv files point at."""

import asyncio
import logging

from django.core.management.base import BaseCommand, CommandParser

from console.listen import listen_address_parse
from console.proxy.connect import serve


class Command(BaseCommand):
    help = "Run the HTTP CONNECT proxy that lets remote-viewer reach consoles with a .vv ticket."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--listen", default="127.0.0.1:3128", help="HOST:PORT (default 127.0.0.1:3128)")

    def handle(self, *args: str, listen: str, **options: object) -> None:
        host, port = listen_address_parse(listen)
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.stdout.write(
            f"SPICE proxy on {host}:{port}; set SPICE_PROXY_URL=http://{host}:{port} for the portal"
        )
        try:
            asyncio.run(serve(host, port))
        except KeyboardInterrupt:
            pass
