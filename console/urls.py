from django.urls import path, re_path

from console import views

app_name = "console"

urlpatterns = [
    path("", views.vm_list, name="vm-list"),
    path("account/tokens/", views.api_tokens, name="api-tokens"),
    path("consoles/live/", views.live_consoles, name="live-consoles"),
    path("recordings/", views.recordings, name="recordings"),
    path("recordings/<int:recording_id>/", views.recording_player, name="recording"),
    path("recordings/<int:recording_id>/data", views.recording_data, name="recording-data"),
    path("vms/<int:vm_id>/", views.vm_detail, name="vm-detail"),
    path("vms/<int:vm_id>/state/", views.vm_state, name="vm-state"),
    path("vms/<int:vm_id>/thumbnail.png", views.vm_thumbnail_png, name="vm-thumbnail"),
    path("vms/<int:vm_id>/console/", views.vm_console, name="vm-console"),
    path("vms/<int:vm_id>/console/ticket/", views.vm_console_ticket, name="vm-console-ticket"),
    path("vms/<int:vm_id>/console.vv", views.vm_console_vv, name="vm-console-vv"),
    path("vms/<int:vm_id>/serial/", views.vm_serial, name="vm-serial"),
    path("vms/<int:vm_id>/shares/", views.vm_share, name="vm-share"),
    path("vms/<int:vm_id>/shares/<int:share_id>/end/", views.vm_share_end, name="vm-share-end"),
    path("vms/<int:vm_id>/serial/ticket/", views.vm_serial_ticket, name="vm-serial-ticket"),
    path("vms/<int:vm_id>/serial/log/", views.vm_serial_log_view, name="vm-serial-log"),
    path("vms/<int:vm_id>/migrate/", views.vm_migrate_view, name="vm-migrate"),
    path("vms/<int:vm_id>/type/", views.vm_type_view, name="vm-type"),
    path("vms/<int:vm_id>/keys/", views.vm_keys_view, name="vm-keys"),
    path("vms/<int:vm_id>/migration/", views.vm_migration_state, name="vm-migration"),
    path("vms/<int:vm_id>/control/", views.vm_control_view, name="vm-control"),
    re_path(
        r"^vms/(?P<vm_id>[0-9]+)/control/(?P<action>request|answer|end)/$",
        views.vm_control_action,
        name="vm-control-action",
    ),
    re_path(
        r"^vms/(?P<vm_id>[0-9]+)/(?P<action>start|shutdown|poweroff|reboot)/$",
        views.vm_action,
        name="vm-action",
    ),
]
