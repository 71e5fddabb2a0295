"""Turns an unreachable hypervisor into a page a user can act on (HTTP 503)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from django.shortcuts import render

from console.hypervisor import HypervisorUnavailable
from console.models import Host

if TYPE_CHECKING:
    from collections.abc import Callable

    from django.http import HttpRequest, HttpResponse

logger = logging.getLogger(__name__)


class HypervisorErrorMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
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
