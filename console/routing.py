from django.urls import path

from console.consumers import ConsoleProxyConsumer

websocket_urlpatterns = [
    path("ws/console/<int:vm_id>/", ConsoleProxyConsumer.as_asgi()),
]
