"""Static files served by an ASGI app in front of Django, not through Django's sync stack.

A console page pulls in 30 to 55 ES modules. Served by WhiteNoise inside Django, each went
through the synchronous middleware chain on a worker thread, and the browser's first frame
waited on them (see README, Performance). Starlette's StaticFiles serves them on the event
loop, from the directories Django's static-file finders search (or from STATIC_ROOT, when a
deployment collected them there), with ETag and Last-Modified revalidation.
"""

from __future__ import annotations

import posixpath
from typing import TYPE_CHECKING

from django.conf import settings
from django.contrib.staticfiles import finders
from starlette.exceptions import HTTPException
from starlette.responses import PlainTextResponse
from starlette.staticfiles import StaticFiles

if TYPE_CHECKING:
    from os import PathLike

    from starlette.responses import Response
    from starlette.types import ASGIApp, Receive, Scope, Send


def static_directories() -> list[str]:
    """Where the static-file finders look, in their order (the first match wins, as in Django)."""
    if settings.STATIC_ROOT:
        return [str(settings.STATIC_ROOT)]
    directories = []
    for finder in finders.get_finders():
        for storage in getattr(finder, "storages", {}).values():
            directories.append(storage.location)
    return directories


# What the pages load; nothing else is served (no HTML page of a third-party client, no
# source map, no dot-file).
SERVED_EXTENSIONS = {".js", ".css", ".png", ".svg", ".ico", ".woff", ".woff2", ".txt"}


def static_path_allowed(path: str) -> bool:
    """Whether a path under STATIC_URL may be served."""
    parts = [part for part in path.split("/") if part]
    if not parts or any(part.startswith(".") for part in parts):
        return False
    return posixpath.splitext(parts[-1])[1].lower() in SERVED_EXTENSIONS


class FinderStaticFiles(StaticFiles):
    def get_directories(
        self,
        directory: str | PathLike[str] | None = None,
        packages: list[str | tuple[str, str]] | None = None,
    ) -> list[str | PathLike[str]]:
        directories: list[str | PathLike[str]] = [*static_directories()]
        return directories

    async def get_response(self, path: str, scope: Scope) -> Response:
        if not static_path_allowed(path):
            raise HTTPException(status_code=404)
        return await super().get_response(path, scope)


def with_static_files(django_app: ASGIApp) -> ASGIApp:
    """An ASGI app serving STATIC_URL itself and passing everything else to Django."""
    prefix = "/" + settings.STATIC_URL.strip("/")
    static_app = FinderStaticFiles()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(prefix + "/"):
            scope = {**scope, "root_path": scope.get("root_path", "") + prefix}
            try:
                await static_app(scope, receive, send)
            except HTTPException as exc:  # StaticFiles leaves rendering 404/405 to Starlette's app
                await PlainTextResponse(exc.detail, status_code=exc.status_code)(scope, receive, send)
        else:
            await django_app(scope, receive, send)

    return app
