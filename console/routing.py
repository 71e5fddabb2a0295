from django.urls import path

from console.consumers import ConsoleProxyConsumer
from console.serial import SerialConsoleConsumer

# Channels routes by Django's path(), whose stubs expect views, not ASGI apps.
websocket_urlpatterns = [
    path("ws/console/<int:vm_id>/", ConsoleProxyConsumer.as_asgi()),  # type: ignore[arg-type]
    path("ws/serial/<int:vm_id>/", SerialConsoleConsumer.as_asgi()),  # type: ignore[arg-type]
]
