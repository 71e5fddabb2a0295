"""Static files: hashed names when collected, served by an ASGI app in front of Django.

bin/setup bundles each console page's client into one file (esbuild) and collects every
static file into STATIC_ROOT under a name carrying a hash of its content (Django's manifest
storage); `{% static %}` names those. A hashed name never changes content, so it is served as
immutable for a year: a console page opened again fetches nothing but its HTML and ticket.
Other names (the unhashed originals) are revalidated each time (ETag, Last-Modified).

They are served on the event loop by Starlette's StaticFiles, not through Django's sync
middleware: a page's files should not wait on a worker thread each (see README, Performance).
"""

from __future__ import annotations

import functools
import json
import posixpath
from pathlib import Path
from typing import TYPE_CHECKING

from django.conf import settings
from django.contrib.staticfiles import finders
from django.contrib.staticfiles.storage import ManifestStaticFilesStorage
from starlette.exceptions import HTTPException
from starlette.responses import PlainTextResponse
from starlette.staticfiles import StaticFiles

if TYPE_CHECKING:
    from os import PathLike

    from starlette.responses import Response
    from starlette.types import ASGIApp, Receive, Scope, Send


class HashedStaticFilesStorage(ManifestStaticFilesStorage):
    """Django's hashed names. Only stylesheets have their references rewritten: the clients'
    modules name source maps their packages do not ship, and the pages load bundles."""

    manifest_strict = False  # a file not collected yet keeps its plain name
    patterns = tuple((glob, rules) for glob, rules in ManifestStaticFilesStorage.patterns if glob == "*.css")


IMMUTABLE = [(b"cache-control", b"public, max-age=31536000, immutable")]
REVALIDATE = [(b"cache-control", b"no-cache")]


@functools.cache
def hashed_names() -> frozenset[str]:
    """The collected files' hashed names (empty when nothing was collected)."""
    manifest = Path(settings.STATIC_ROOT or "", "staticfiles.json")
    try:
        return frozenset(json.loads(manifest.read_text())["paths"].values())
    except (OSError, ValueError, KeyError):
        return frozenset()


def static_directories() -> list[str]:
    """STATIC_ROOT once collected; else where the static-file finders look, in their order
    (the first match wins, as in Django)."""
    if hashed_names():
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
        response = await super().get_response(path, scope)
        immutable = path.lstrip("/") in hashed_names()
        response.raw_headers += IMMUTABLE if immutable else REVALIDATE
        return response


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
