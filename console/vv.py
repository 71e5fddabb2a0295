"""Pure: a console endpoint and a password -> the text of a virt-viewer (.vv) file.

The format is a GLib key file. Values are escaped the GLib way (backslash, leading space) and
anything that could end a line is refused, so no value can add a key or a section. A CA
certificate is the one multi-line value; GLib reads its line breaks back from `\\n`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_LINE_BREAKING = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\u0085\u2028\u2029]")


@dataclass(frozen=True)
class VvFile:
    type: str  # "spice" or "vnc"
    host: str
    port: int
    password: str
    title: str
    tls_port: int | None = None
    ca: str = ""  # PEM
    host_subject: str = ""
    proxy: str = ""  # http://HOST:PORT, SPICE only
    fullscreen: bool = False


def _escape(value: str, key: str) -> str:
    if _LINE_BREAKING.search(value):
        raise ValueError(f".vv value for {key!r} contains a line break or control character")
    value = value.replace("\\", "\\\\")
    if value.startswith(" "):
        value = "\\s" + value[1:]
    return value


def vv_render(vv: VvFile) -> str:
    """The .vv file's text."""
    if vv.type not in ("spice", "vnc"):
        raise ValueError(f"console type must be spice or vnc, not {vv.type!r}")
    fields: list[tuple[str, str]] = [
        ("type", vv.type),
        ("host", vv.host),
        ("port", str(int(vv.port))),
        ("password", vv.password),
        ("title", vv.title),
        ("delete-this-file", "1"),
        ("fullscreen", "1" if vv.fullscreen else "0"),
        ("secure-attention", "ctrl+alt+end"),
        ("toggle-fullscreen", "shift+f11"),
        ("release-cursor", "shift+f12"),
    ]
    if vv.type == "spice":
        fields.append(("enable-usbredir", "1"))
        if vv.tls_port and vv.ca:
            fields.append(("tls-port", str(int(vv.tls_port))))
            # GLib key files read "\n" in a value back as a line break.
            fields.append(("ca", "\\n".join(_escape(line, "ca") for line in vv.ca.strip().splitlines())))
            if vv.host_subject:
                fields.append(("host-subject", vv.host_subject))
        if vv.proxy:
            fields.append(("proxy", vv.proxy))
    lines = ["[virt-viewer]"]
    for key, value in fields:
        lines.append(f"{key}={value if key == 'ca' else _escape(value, key)}")
    return "\n".join(lines) + "\n"
