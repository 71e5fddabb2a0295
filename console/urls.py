from django.urls import path, re_path

from console import views

app_name = "console"

urlpatterns = [
    path("", views.vm_list, name="vm-list"),
    path("vms/<int:vm_id>/", views.vm_detail, name="vm-detail"),
    re_path(
        r"^vms/(?P<vm_id>[0-9]+)/(?P<action>start|shutdown|poweroff|reboot)/$",
        views.vm_action,
        name="vm-action",
    ),
]
