"""manage.py consoleproxy --listen 127.0.0.1:6080: websockify, admitting the portal's tickets."""

import logging

from django.core.management.base import BaseCommand, CommandParser

from console.listen import listen_address_parse
from console.proxy.websockify import websockify_proxy


class Command(BaseCommand):
    help = (
        "Run websockify as the browser console proxy, apart from the web application. "
        "Point the portal's pages at it with CONSOLE_PROXY_URL=ws://HOST:PORT/."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--listen", default="127.0.0.1:6080", help="HOST:PORT (default 127.0.0.1:6080)")
        parser.add_argument("--verbose-proxy", action="store_true", help="websockify's verbose log")

    def handle(self, *args: str, listen: str, verbose_proxy: bool, **options: object) -> None:
        host, port = listen_address_parse(listen)
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.stdout.write(
            f"websockify console proxy on {host}:{port}; set CONSOLE_PROXY_URL=ws://{host}:{port}/"
        )
        websockify_proxy(host, port, verbose=verbose_proxy).start_server()
