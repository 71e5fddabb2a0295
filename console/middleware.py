"""Turns an unreachable hypervisor into a page a user can act on (HTTP 503)."""

from __future__ import annotations

import logging

from django.shortcuts import render

from console.hypervisor import HypervisorUnavailable
from console.models import Host

logger = logging.getLogger(__name__)


class HypervisorErrorMiddleware:
    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if not isinstance(exception, HypervisorUnavailable):
            return None
        host = (
            Host.objects.filter(name=exception.host).first() or Host.objects.filter(uri=exception.uri).first()
        )
        logger.warning("hypervisor %s unavailable: %s", exception.uri, exception.message)
        return render(
            request,
            "console/hypervisor_unavailable.html",
            {"host": host, "uri": exception.uri, "message": exception.message},
            status=503,
        )
