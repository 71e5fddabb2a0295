"""Hosts as an admin sees them: is it there, what runs it, and how to trust its SSH key."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from functools import partial
from urllib.parse import urlsplit

import asyncssh

from console.errors import VmStateConflict
from console.hypervisor import HypervisorError, hypervisor_for
from console.hypervisor.ssh import public_key_fingerprint, ssh_target
from console.models import Host

CHECK_TIMEOUT = 8.0  # seconds a host may take to answer a health check
RECENT_SECONDS = 10.0  # how old a check anonymous callers (/readyz, metrics) may be given
_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="host-check")
_lock = threading.Lock()
# By host and URI: a host whose URI changed (or a row re-created with the same id) is another.
# Keyed by what the check connects with: a check of a host's old settings (before its host key
# was recorded, say) is never the answer for its new ones.
_Key = tuple[int, str, str, str]
_recent: dict[_Key, tuple[float, HostHealth]] = {}
_inflight: dict[_Key, Future[str]] = {}


def host_takes_vms_check(host: Host) -> None:
    """VmStateConflict when `host` is in maintenance: no VM starts or moves there."""
    if host.maintenance:
        raise VmStateConflict(
            f"{host.name} is in maintenance: no VM starts or moves there until staff end it "
            "(admin, Hosts). Ask them to move the VM to another host, or try again later."
        )


@dataclass(frozen=True)
class HostHealth:
    ok: bool
    text: str  # "libvirt 9.0.0" or why not


def _finished(key: _Key, future: Future[str]) -> None:
    try:
        health = HostHealth(True, future.result())
    except HypervisorError as exc:
        health = HostHealth(False, str(exc))
    with _lock:
        _recent[key] = (time.monotonic(), health)
        if _inflight.get(key) is future:
            del _inflight[key]


def host_checks(hosts: list[Host], *, max_age: float = 0.0) -> dict[int, HostHealth]:
    """Health of several hosts, side by side: a check made in the last `max_age` seconds, or
    the one in flight, or a new one. At most one check per host runs at a time, however many
    ask (a host that is gone may hold its check until libvirt's keep-alive gives up), and
    each caller waits at most CHECK_TIMEOUT."""
    now = time.monotonic()
    results: dict[int, HostHealth] = {}
    waiting: dict[int, tuple[Host, Future[str]]] = {}
    started: list[tuple[_Key, Future[str]]] = []
    with _lock:
        for host in hosts:
            key = (host.pk, host.uri, host.ssh_key_file, host.ssh_host_key.strip())
            seen = _recent.get(key)
            if seen is not None and now - seen[0] < max_age:
                results[host.pk] = seen[1]
                continue
            future = _inflight.get(key)
            if future is None:
                future = _inflight[key] = _pool.submit(hypervisor_for(host).version)
                started.append((key, future))
            waiting[host.pk] = (host, future)
    for key, future in started:  # outside the lock: a check already done calls back at once
        future.add_done_callback(partial(_finished, key))
    deadline = now + CHECK_TIMEOUT
    for pk, (host, future) in waiting.items():
        try:
            results[pk] = HostHealth(True, future.result(timeout=max(0.0, deadline - time.monotonic())))
        except FutureTimeout:
            results[pk] = HostHealth(False, f"{host.name} does not answer within {CHECK_TIMEOUT:.0f} s")
        except HypervisorError as exc:
            results[pk] = HostHealth(False, str(exc))
    return results


def host_check(host: Host) -> HostHealth:
    """Ask the host for its libvirt version now (or join the check in flight)."""
    return host_checks([host])[host.pk]


def host_health(host: Host) -> HostHealth:
    """A host's health as checked in the last few seconds, or now."""
    return host_checks([host], max_age=RECENT_SECONDS)[host.pk]


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
