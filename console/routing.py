from django.urls import path

from console.consumers import ConsoleProxyConsumer
from console.serial import SerialConsoleConsumer

websocket_urlpatterns = [
    path("ws/console/<int:vm_id>/", ConsoleProxyConsumer.as_asgi()),
    path("ws/serial/<int:vm_id>/", SerialConsoleConsumer.as_asgi()),
]
