"""Parsing --listen HOST:PORT for the proxy commands."""

from __future__ import annotations

import ipaddress

from django.core.management.base import CommandError


def listen_address_parse(value: str) -> tuple[str, int]:
    """'127.0.0.1:3128' or '[::1]:3128' -> (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise CommandError(f"--listen {value!r}: expected HOST:PORT, e.g. 127.0.0.1:3128")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise CommandError(f"--listen {value!r}: {host!r} is not an IP address") from None
    return host, int(port)
