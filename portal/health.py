"""/healthz: the process answers (for HAProxy's health check; no database, no libvirt)."""

from django.http import HttpResponse
from django.views.decorators.cache import never_cache


@never_cache
def healthz(request):
    return HttpResponse("ok\n", content_type="text/plain")
