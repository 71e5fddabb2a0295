"""The ES modules a console page will import, so the page can ask for them all at once.

Browsers find a module's imports only after fetching it, one level at a time; listing the
whole graph as <link rel="modulepreload"> turns that chain of round trips into one batch.
The graph is read from the installed client files (import statements), once per process.
"""

from __future__ import annotations

import functools
import posixpath
import re

from django.contrib.staticfiles import finders

_IMPORT = re.compile(
    r"""^\s*(?:import|export)\b[^'"]*?\bfrom\s*['"]([^'"]+)['"]|^\s*import\s*['"]([^'"]+)['"]""", re.M
)


@functools.cache
def module_graph(entry: str) -> tuple[str, ...]:
    """Static paths of `entry` (e.g. "console/spice-console.js") and everything it imports."""
    seen: list[str] = []
    pending = [entry]
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        found = finders.find(path)
        if found is None:
            continue
        seen.append(path)
        with open(found, encoding="utf-8") as handle:
            source = handle.read()
        for match in _IMPORT.finditer(source):
            target = match.group(1) or match.group(2)
            if target.startswith("."):
                pending.append(posixpath.normpath(posixpath.join(posixpath.dirname(path), target)))
    return tuple(seen)
