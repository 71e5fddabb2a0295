"""ASGI entry point: Django for HTTP, the console proxy for WebSockets."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
# Django must be set up before anything imports models.
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from console.routing import websocket_urlpatterns  # noqa: E402
from portal.logsafety import redact_tokens_in  # noqa: E402
from portal.security import with_security_headers  # noqa: E402
from portal.static import with_static_files  # noqa: E402

# uvicorn logs WebSocket targets with their query string, which carries the console ticket.
redact_tokens_in("uvicorn.error", "uvicorn.access")

# The console consumer checks the Origin and the session cookie itself: a foreign page gets a
# close code that says so rather than a bare failed handshake, and no session middleware
# wraps each relayed message (see console/consumers.py).
# (Django's, Channels' and Starlette's stubs each type ASGI apps their own way.)
application = ProtocolTypeRouter(
    {
        "http": with_security_headers(with_static_files(django_asgi_app)),  # type: ignore[arg-type]
        "websocket": URLRouter(websocket_urlpatterns),  # type: ignore[arg-type]
    }
)
