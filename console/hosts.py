"""Hosts as an admin sees them: is it there, what runs it, and how to trust its SSH key."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from urllib.parse import urlsplit

import asyncssh

from console.hypervisor import HypervisorError, hypervisor_for
from console.hypervisor.ssh import public_key_fingerprint, ssh_target
from console.models import Host

CHECK_TIMEOUT = 8.0  # seconds a host may take to answer a health check
_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="host-check")


@dataclass(frozen=True)
class HostHealth:
    ok: bool
    text: str  # "libvirt 9.0.0" or why not


def host_check(host: Host) -> HostHealth:
    """Ask the host for its libvirt version, giving up after CHECK_TIMEOUT (a host that is
    gone may not even refuse the connection)."""
    future = _pool.submit(lambda: hypervisor_for(host).version())
    try:
        return HostHealth(True, future.result(timeout=CHECK_TIMEOUT))
    except FutureTimeout:
        return HostHealth(False, f"{host.name} does not answer within {CHECK_TIMEOUT:.0f} s")
    except HypervisorError as exc:
        return HostHealth(False, str(exc))


_recent: dict[int, tuple[float, HostHealth]] = {}
RECENT_SECONDS = 10.0


def host_checks(hosts: list[Host]) -> dict[int, HostHealth]:
    """Health of several hosts, checked side by side (and remembered for a few seconds)."""
    futures = {host.pk: _pool.submit(host_check, host) for host in hosts}
    results = {pk: future.result() for pk, future in futures.items()}
    now = time.monotonic()
    _recent.update({pk: (now, health) for pk, health in results.items()})
    return results


def host_health(host: Host) -> HostHealth:
    """A host's health as checked in the last few seconds, or now."""
    seen = _recent.get(host.pk)
    if seen is not None and time.monotonic() - seen[0] < RECENT_SECONDS:
        return seen[1]
    return host_checks([host])[host.pk]


def ssh_host_key_offered(host: Host) -> str | None:
    """The public key the host's SSH server offers now ('ssh-ed25519 AAAA...'), to show an
    admin with its fingerprint; never trusted without them."""
    target = ssh_target(host)
    if target is None:
        return None

    async def fetch() -> str:
        key = await asyncio.wait_for(
            asyncssh.get_server_host_key(target.hostname, target.port), CHECK_TIMEOUT
        )
        if key is None:
            raise OSError("the host offered no key")
        return key.export_public_key().decode().strip()

    try:
        return _pool.submit(asyncio.run, fetch()).result(timeout=CHECK_TIMEOUT + 1)
    except (OSError, asyncssh.Error, asyncio.TimeoutError, FutureTimeout):
        return None


def host_key_advice(host: Host) -> str:
    """What to tell an admin whose SSH host has no recorded key yet."""
    offered = ssh_host_key_offered(host)
    name = urlsplit(host.uri).hostname
    if offered is None:
        return f"{name} did not offer an SSH host key; check that sshd runs there."
    return (
        f"{name} offers the SSH host key {public_key_fingerprint(offered)}. If that is the host's "
        f"key (on the host: ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub), paste this into "
        f"'SSH host key' to trust it: {offered}"
    )
