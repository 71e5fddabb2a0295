"""Reaching a remote host over SSH: libvirt's connection URI and the console tunnels' settings.

Hosts are given as `qemu+ssh://user@host[:port]/system`. The portal connects with libvirt's
libssh transport (`qemu+libssh`, the same remote end: it takes a `known_hosts` file, which the
`ssh` transport cannot, and answered in 0.22 s instead of 0.35-0.47 s here), with its own key
and with the host's key as the admin recorded it in a known_hosts file the portal keeps: an
unknown or changed host key is refused, never accepted silently.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit

from django.conf import settings

if TYPE_CHECKING:
    from console.models import Host

SSH_TRANSPORTS = ("ssh", "libssh")


@dataclass(frozen=True)
class SshTarget:
    """Where and how to reach one host over SSH."""

    user: str
    hostname: str
    port: int
    key_file: str
    known_hosts: str  # path of a known_hosts file holding this host's key only
    host_key: str = ""  # the recorded key itself: a changed key makes another target (connection)


def host_transport(uri: str) -> str:
    """'ssh', 'libssh', 'tls' or '' (local) from a host's libvirt URI."""
    scheme = urlsplit(uri).scheme
    return scheme.split("+", 1)[1] if "+" in scheme else ""


def ssh_target(host: Host) -> SshTarget | None:
    """The SSH side of a host reached over ssh/libssh; None for other hosts."""
    if host_transport(host.uri) not in SSH_TRANSPORTS:
        return None
    parts = urlsplit(host.uri)
    return SshTarget(
        user=parts.username or "root",
        hostname=parts.hostname or "",
        port=parts.port or 22,
        key_file=host.ssh_key_file or settings.SSH_KEY_FILE,
        known_hosts=str(known_hosts_file(host)),
        host_key=host.ssh_host_key.strip(),
    )


def known_hosts_line(hostname: str, port: int, public_key: str) -> str:
    """A known_hosts line for a host's public key ('ssh-ed25519 AAAA... [comment]')."""
    kind, blob = public_key.split()[:2]
    name = hostname if port == 22 else f"[{hostname}]:{port}"
    return f"{name} {kind} {blob}\n"


def known_hosts_file(host: Host) -> Path:
    """The portal's known_hosts file for this host (written from its recorded key)."""
    directory = Path(settings.SSH_KNOWN_HOSTS_DIR)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    # A name of its own kind: even a directory shared with the key by mistake never has a host
    # named "id_ed25519" overwrite it (host names are slugs: no path separators).
    path = directory / f"known_hosts-{host.name}"
    parts = urlsplit(host.uri)
    line = (
        known_hosts_line(parts.hostname or "", parts.port or 22, host.ssh_host_key)
        if host.ssh_host_key
        else ""
    )
    if not path.exists() or path.read_text() != line:
        temporary = path.with_suffix(f".{os.getpid()}")
        temporary.write_text(line)
        temporary.replace(path)
    return path


def public_key_fingerprint(public_key: str) -> str:
    """'SHA256:...' as ssh-keygen -l prints it."""
    blob = base64.b64decode(public_key.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def connect_uri(host: Host) -> str:
    """The URI libvirt connects with: for SSH hosts, libssh with the portal's key and known_hosts."""
    target = ssh_target(host)
    if target is None:
        return host.uri
    parts = urlsplit(host.uri)
    query = "&".join(
        f"{name}={quote(value, safe='/')}"
        for name, value in (
            ("keyfile", target.key_file),
            ("known_hosts", target.known_hosts),
            ("known_hosts_verify", "normal"),  # unknown or changed host keys are refused
            ("sshauth", "privkey"),
        )
    )
    return f"qemu+libssh://{parts.netloc}{parts.path}?{query}"


def ssh_options(target: SshTarget) -> list[str]:
    """OpenSSH client options for a target: its key, its recorded host key only, no prompts."""
    return [
        "-i",
        target.key_file,
        "-p",
        str(target.port),
        "-o",
        f"UserKnownHostsFile={target.known_hosts}",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        "IdentitiesOnly=yes",
        "-F",
        "/dev/null",
    ]
