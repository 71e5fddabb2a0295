from django.contrib import admin
from django.urls import include, path
from django.views.decorators.cache import cache_control
from django.views.i18n import JavaScriptCatalog

from api.v1 import api
from console.sso import sso_callback, sso_login
from console.views import PortalLoginView, PortalLogoutView, console_ws_http, two_factor, two_factor_verify
from portal.health import healthz, metrics, readyz

urlpatterns = [
    path("accounts/login/", PortalLoginView.as_view(), name="login"),
    path("accounts/logout/", PortalLogoutView.as_view(), name="logout"),
    path("accounts/two-factor/", two_factor, name="two-factor"),
    path("accounts/two-factor/verify/", two_factor_verify, name="two-factor-verify"),
    path("accounts/sso/login/", sso_login, name="sso-login"),
    path("accounts/sso/callback/", sso_callback, name="sso-callback"),
    path("admin/", admin.site.urls),
    # The language switch (POST), and the console pages' translations for their JavaScript.
    path("i18n/", include("django.conf.urls.i18n")),
    path(
        "jsi18n/",
        cache_control(max_age=3600, private=True)(JavaScriptCatalog.as_view(packages=["console"])),
        name="javascript-catalog",
    ),
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("metrics", metrics, name="metrics"),
    path("api/v1/", api.urls),
    path("", include("console.urls")),
    # Served by the WebSocket router (console/routing.py); named here so pages can reverse it.
    path("ws/console/<int:vm_id>/", console_ws_http, name="console-ws"),
    path("ws/serial/<int:vm_id>/", console_ws_http, name="serial-ws"),
]

# A failure for want of the database is a 503 saying so, in HTML or the API's error model.
handler500 = "portal.failures.server_error"
