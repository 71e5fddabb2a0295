"""What the portal answers when a request fails for want of its database (or anything else
unexpected): Django's handler500, with the exception still in hand.

A database that does not answer is no bug of the page: the answer is 503 with Retry-After,
in words that say consoles already open keep working (they relay without it and are checked
again when it is back), as an HTML page, or the API's error model. It renders without touching
the database (no request context: no session, no user, no messages).
"""

from __future__ import annotations

import sys

from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.loader import render_to_string

from console.errors import DATABASE_DOWN


def _wants_json(request: HttpRequest) -> bool:
    return (
        request.path.startswith("/api/")
        or getattr(request, "json_errors", False)
        or "application/json" in request.headers.get("Accept", "")
    )


def server_error(request: HttpRequest) -> HttpResponse:
    exception = sys.exc_info()[1]
    if isinstance(exception, DatabaseError):
        error, status = DATABASE_DOWN, DATABASE_DOWN.status
    else:
        error, status = None, 500
    if _wants_json(request):
        if request.path.startswith("/api/"):
            code = error.code if error else "server_error"
            message = (
                error.message if error else "The portal failed; an administrator can see why in its log."
            )
            body: dict[str, object] = {"error": {"code": code, "message": message, "field": None}}
        else:
            body = {
                "error": error.message if error else "the portal failed",
                "code": error.code if error else "server_error",
            }
        response: HttpResponse = JsonResponse(body, status=status)
    else:
        html = render_to_string("portal/failure.html", {"status": status, "error": error})
        response = HttpResponse(html, status=status)
    for name, value in (error.headers() if error else {}).items():
        response[name] = value
    return response
