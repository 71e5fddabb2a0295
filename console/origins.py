"""Origins: the scheme, host and port a page came from, compared exactly.

A console WebSocket must come from a page of this portal: the same scheme, host and port the
browser used to reach it (or an origin listed in CSRF_TRUSTED_ORIGINS). A host name alone is
not enough: another port or scheme on the same host is another site.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from django.conf import settings
from django.http.request import split_domain_port, validate_host

if TYPE_CHECKING:
    from django.http import HttpRequest
    from starlette.types import Scope

_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_normalize(value: str | None) -> str | None:
    """'scheme://host[:port]' in canonical form (lower case, default port dropped), or None
    for anything that is not exactly an http(s) origin."""
    if not value or any(c.isspace() for c in value):
        return None
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = parts.hostname
    if scheme not in _DEFAULT_PORTS or not host or parts.username or parts.password:
        return None
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return None
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}" + ("" if port in (None, _DEFAULT_PORTS[scheme]) else f":{port}")


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return ""


def websocket_own_origin(scope: Scope) -> str | None:
    """The origin of this portal as the browser reached it for this WebSocket, if its Host is ours."""
    headers = scope.get("headers", [])
    host = _header(headers, b"host")
    domain, _port = split_domain_port(host)
    if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
        return None
    forwarded = _header(headers, b"x-forwarded-proto").split(",")[0].strip().lower()
    secure = scope.get("scheme") == "wss" or (settings.BEHIND_TLS_PROXY and forwarded == "https")
    return origin_normalize(f"{'https' if secure else 'http'}://{host}")


def websocket_origin_allowed(scope: Scope) -> str | None:
    """The request's Origin, normalized, when it is this portal's own (else None)."""
    origin = origin_normalize(_header(scope.get("headers", []), b"origin"))
    if origin is None:
        return None
    trusted = {origin_normalize(o) for o in settings.CSRF_TRUSTED_ORIGINS}
    if origin == websocket_own_origin(scope) or origin in trusted:
        return origin
    return None


def request_origin(request: HttpRequest) -> str:
    """The origin of the page that sent an HTTP request (CSRF has checked it on POST)."""
    return (
        origin_normalize(request.headers.get("Origin"))
        or origin_normalize(f"{request.scheme}://{request.get_host()}")
        or ""
    )


def client_ip(value: object) -> str | None:
    """A client's address as the records keep it: an IP address, or None for anything else (a
    forged X-Forwarded-For value, a UNIX socket's path)."""
    if not isinstance(value, str) or not value or len(value) > 45:
        return None
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        return None
