"""The pages' one handler of errors users can cause: a `PortalError` raised anywhere under a
page becomes its status, its headers (Retry-After) and its message, as an HTML page or, for
the pages' own JSON requests (`wants_json`), as `{"error", "code"}`. The API has
its own handler, with its error model (api/v1.py)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from django.http import JsonResponse
from django.shortcuts import redirect, render

from console.errors import PortalError, SecondFactorRequired
from console.hypervisor import HypervisorError, HypervisorUnavailable
from console.models import Host

if TYPE_CHECKING:
    from collections.abc import Callable

    from django.http import HttpRequest, HttpResponse

logger = logging.getLogger(__name__)


def wants_json(request: HttpRequest) -> bool:
    """The pages' own JSON requests: views that answer JSON set `request.json_errors`."""
    return getattr(request, "json_errors", False) or "application/json" in request.headers.get("Accept", "")


class PortalErrorMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, PortalError):
            return None
        user = getattr(request, "user", None)
        staff = bool(user is not None and user.is_authenticated and user.is_staff)
        message = exception.public_message(staff=staff)
        if isinstance(exception, HypervisorError):
            logger.warning("hypervisor %s: %s", exception.uri, exception.message)
        response: HttpResponse
        if wants_json(request):
            body: dict[str, object] = {"error": message, "code": exception.code}
            if "Retry-After" in exception.headers():
                body["retryAfter"] = int(exception.headers()["Retry-After"])
            if isinstance(exception, SecondFactorRequired):
                body["verifyUrl"] = exception.verify_url  # the page goes there, and comes back
            response = JsonResponse(body, status=exception.status)
        elif isinstance(exception, SecondFactorRequired):
            response = redirect(exception.verify_url)
        elif isinstance(exception, HypervisorUnavailable):
            host = (
                Host.objects.filter(name=exception.host).first()
                or Host.objects.filter(uri=exception.uri).first()
            )
            context: dict[str, object] = {"host": host, "uri": exception.uri, "message": exception.message}
            response = render(
                request, "console/hypervisor_unavailable.html", context, status=exception.status
            )
        else:
            context = {"status": str(exception.status), "message": message, "code": exception.code}
            response = render(request, "console/error.html", context, status=exception.status)
        for name, value in exception.headers().items():
            response[name] = value
        return response
