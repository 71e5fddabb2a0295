from django.urls import path

from console.models import ConsoleTicket
from console.proxy.replay import recording_replay_websocket
from console.proxy.websocket import console_websocket

# Channels routes by Django's path(), whose stubs expect views, not ASGI apps.
websocket_urlpatterns = [
    path("ws/console/<int:vm_id>/", console_websocket(ConsoleTicket.Kind.BROWSER)),  # type: ignore[arg-type]
    path("ws/serial/<int:vm_id>/", console_websocket(ConsoleTicket.Kind.SERIAL)),  # type: ignore[arg-type]
    path("ws/recording/<int:recording_id>/spice/", recording_replay_websocket()),  # type: ignore[arg-type]
]
