"""The hypervisor interface, and its libvirt implementation: the only module importing libvirt.

Callers get a `Hypervisor` for a libvirt URI from `hypervisor_for(uri)`. Connections are
reused per URI; every libvirt error comes out as a `HypervisorError` with a readable message.
All of it blocks, so it must never run on an event loop (it refuses to).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import libvirt

T = TypeVar("T")

# libvirt prints every error to stderr by default; we report them ourselves.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

# Errors that mean "the daemon does not answer" rather than "the operation failed".
_UNAVAILABLE_CODES = {
    libvirt.VIR_ERR_NO_CONNECT,
    libvirt.VIR_ERR_RPC,
    libvirt.VIR_ERR_AUTH_FAILED,
    libvirt.VIR_ERR_AUTH_UNAVAILABLE,
    libvirt.VIR_ERR_AUTH_CANCELLED,
}
_UNAVAILABLE_DOMAINS = {libvirt.VIR_FROM_RPC, libvirt.VIR_FROM_REMOTE}

_STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: "running",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "running",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "shutting down",
    libvirt.VIR_DOMAIN_SHUTOFF: "shut off",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "suspended",
}
ACTIVE_STATES = {"running", "paused", "shutting down", "suspended"}
MISSING = "missing"


class HypervisorError(Exception):
    """A hypervisor operation failed; the message says why, in libvirt's words."""

    def __init__(self, message: str, *, uri: str) -> None:
        super().__init__(message)
        self.message = message
        self.uri = uri


class HypervisorUnavailable(HypervisorError):
    """The hypervisor does not answer: libvirtd down, host unreachable, access refused."""


class DomainNotFound(HypervisorError):
    """No domain of that name is defined on the hypervisor."""


class DomainRunning(HypervisorError):
    """The operation needs a stopped domain."""


class DomainNotRunning(HypervisorError):
    """The operation needs a running domain."""


def _ensure_not_on_event_loop() -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise RuntimeError("libvirt calls block; run them in a thread (sync_to_async)")


class Hypervisor:
    """Operations on the domains of one libvirt connection."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._conn: libvirt.virConnect | None = None
        self._lock = threading.Lock()

    # -- connection and error handling -------------------------------------------------

    def _connection(self) -> libvirt.virConnect:
        with self._lock:
            conn = self._conn
            if conn is not None:
                try:
                    if conn.isAlive():
                        return conn
                except libvirt.libvirtError:
                    pass
                self._conn = None
            try:
                self._conn = libvirt.open(self.uri)
            except libvirt.libvirtError as exc:
                raise HypervisorUnavailable(_message(exc), uri=self.uri) from None
            return self._conn

    @contextmanager
    def _translated(self, domain_name: str | None = None) -> Iterator[None]:
        try:
            yield
        except libvirt.libvirtError as exc:
            code = exc.get_error_code()
            if code == libvirt.VIR_ERR_NO_DOMAIN:
                raise DomainNotFound(
                    f"domain {domain_name!r} is not defined on {self.uri}", uri=self.uri
                ) from None
            if code in _UNAVAILABLE_CODES or exc.get_error_domain() in _UNAVAILABLE_DOMAINS:
                with self._lock:
                    self._conn = None
                raise HypervisorUnavailable(_message(exc), uri=self.uri) from None
            raise HypervisorError(_message(exc), uri=self.uri) from None

    def _call(self, fn: Callable[[libvirt.virConnect], T], domain_name: str | None = None) -> T:
        _ensure_not_on_event_loop()
        conn = self._connection()
        with self._translated(domain_name):
            return fn(conn)

    def _domain(self, conn: libvirt.virConnect, name: str) -> libvirt.virDomain:
        return conn.lookupByName(name)

    # -- reads ---------------------------------------------------------------------------

    def version(self) -> str:
        """The hypervisor's version, as a liveness check."""

        def read(conn: libvirt.virConnect) -> str:
            v = conn.getVersion()
            return f"{v // 1000000}.{v // 1000 % 1000}.{v % 1000}"

        return self._call(read)

    def states(self) -> dict[str, str]:
        """Every defined domain's name and state."""

        def read(conn: libvirt.virConnect) -> dict[str, str]:
            return {dom.name(): _STATES.get(dom.state()[0], "unknown") for dom in conn.listAllDomains()}

        return self._call(read)

    def state(self, name: str) -> str:
        """One domain's state, or 'missing' when it is not defined."""
        try:
            return self._call(lambda conn: _STATES.get(self._domain(conn, name).state()[0], "unknown"), name)
        except DomainNotFound:
            return MISSING

    def domain_id(self, name: str) -> int | None:
        """The running domain's ID (a new one on every start), or None when it is not running."""

        def read(conn: libvirt.virConnect) -> int | None:
            dom = self._domain(conn, name)
            return dom.ID() if dom.isActive() else None

        try:
            return self._call(read, name)
        except DomainNotFound:
            return None

    def xml(self, name: str, *, secure: bool = False, inactive: bool = False) -> str:
        """A domain's XML: the live one, or the persistent one with inactive=True."""
        flags = (libvirt.VIR_DOMAIN_XML_SECURE if secure else 0) | (
            libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0
        )
        return self._call(lambda conn: self._domain(conn, name).XMLDesc(flags), name)

    # -- changes ---------------------------------------------------------------------------

    def define_and_start(self, name: str, xml: str) -> None:
        """Define the domain from XML and start it; on failure put the old definition back."""

        def run(conn: libvirt.virConnect) -> None:
            previous = None
            try:
                old = conn.lookupByName(name)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                    raise
            else:
                if old.isActive():
                    raise DomainRunning(f"{name} is already running", uri=self.uri)
                previous = old.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE | libvirt.VIR_DOMAIN_XML_INACTIVE)
            dom = conn.defineXML(xml)
            try:
                dom.create()
            except libvirt.libvirtError:
                try:
                    if previous is not None:
                        conn.defineXML(previous)
                    else:
                        dom.undefine()
                except libvirt.libvirtError:
                    pass  # the start error below is the one worth reporting
                raise

        self._call(run, name)

    def shutdown(self, name: str) -> None:
        """Ask the guest to shut down (ACPI power button)."""
        self._call(lambda conn: self._active_domain(conn, name).shutdown(), name)

    def destroy(self, name: str) -> None:
        """Power the domain off at once."""
        self._call(lambda conn: self._active_domain(conn, name).destroy(), name)

    def undefine(self, name: str) -> None:
        """Remove a stopped domain's definition (tests and clean-ups)."""
        self._call(lambda conn: self._domain(conn, name).undefine(), name)

    def update_graphics(self, name: str, device_xml: str) -> None:
        """Change the live graphics device (its password) of a running domain."""
        self._call(
            lambda conn: self._active_domain(conn, name).updateDeviceFlags(
                device_xml, libvirt.VIR_DOMAIN_AFFECT_LIVE
            ),
            name,
        )

    def _active_domain(self, conn: libvirt.virConnect, name: str) -> libvirt.virDomain:
        dom = self._domain(conn, name)
        if not dom.isActive():
            raise DomainNotRunning(f"{name} is not running", uri=self.uri)
        return dom


def _message(exc: libvirt.libvirtError) -> str:
    return (exc.get_error_message() or str(exc)).strip()


_hypervisors: dict[str, Hypervisor] = {}
_hypervisors_lock = threading.Lock()


def hypervisor_for(uri: str) -> Hypervisor:
    """The shared Hypervisor (and so connection) for a libvirt URI."""
    with _hypervisors_lock:
        if uri not in _hypervisors:
            _hypervisors[uri] = Hypervisor(uri)
        return _hypervisors[uri]
