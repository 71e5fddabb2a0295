"""Security headers on every response, static files included, in one place.

An ASGI wrapper in front of everything (Django and the static files), so no response leaves
without them. The Content-Security-Policy allows no inline script and no inline <style>:
scripts, styles and modules come from the portal itself; WebSockets go to the portal (and to
CONSOLE_PROXY_URL when set); no page may be framed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from django.conf import settings

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send


def _origin(url: str) -> list[str]:
    """[scheme://host:port] of `url`, or [] when it is unset."""
    parts = urlsplit(url)
    return [f"{parts.scheme}://{parts.netloc}"] if parts.scheme and parts.netloc else []


def content_security_policy(*, style_nonce: str = "") -> str:
    """The policy of every page; `style_nonce` also admits <style> elements carrying it."""
    connect = ["'self'", *_origin(settings.CONSOLE_PROXY_URL)]
    directives = {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", f"'nonce-{style_nonce}'"] if style_nonce else ["'self'"],
        # spice-html5 positions video streams with setAttribute("style", ...): attributes only,
        # which cannot load anything or select elements.
        "style-src-attr": ["'unsafe-inline'"],
        "img-src": ["'self'", "data:", "blob:"],
        "media-src": ["'self'", "blob:"],
        "connect-src": connect,
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        # Logging out of a single sign-on session continues at the provider's end-session page.
        "form-action": ["'self'", *_origin(settings.OIDC_ISSUER)],
        "frame-ancestors": ["'none'"],
    }
    return "; ".join(f"{name} {' '.join(values)}" for name, values in directives.items())


def with_security_headers(app: ASGIApp) -> ASGIApp:
    """An ASGI app adding the security headers to every HTTP response `app` sends."""
    headers = [
        (b"content-security-policy", content_security_policy().encode()),
        (b"x-frame-options", b"DENY"),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"same-origin"),
        (b"cross-origin-opener-policy", b"same-origin"),
    ]

    async def secured(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(name, value) for name, value in headers if name not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await app(scope, receive, send_secured)

    return secured
