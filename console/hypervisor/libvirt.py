"""The libvirt implementation of the hypervisor contract: the only module importing libvirt.

One `LibvirtHypervisor` per host and process, each with one reused connection (libvirt
connections are thread-safe), a keep-alive so a dead host is noticed within seconds, and a
fresh connection after a failure. Every libvirt error comes out as one of `base`'s errors,
naming the host. All of it blocks, so it must never run on an event loop (it refuses to).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, TypeVar

import libvirt

from console.hypervisor.base import (
    ACTIVE_STATES,
    MISSING,
    ConsoleBusy,
    DomainNotFound,
    DomainNotRunning,
    DomainRunning,
    Hypervisor,
    HypervisorError,
    HypervisorUnavailable,
    MigrationFailed,
    NoSerialConsole,
)
from console.hypervisor.ssh import SshTarget, ssh_options
from console.metrics import LIBVIRT_CALL

if TYPE_CHECKING:
    from console.models import Host

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
_UNAVAILABLE_DOMAINS = {libvirt.VIR_FROM_RPC, libvirt.VIR_FROM_REMOTE, libvirt.VIR_FROM_SSH}

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
__all__ = ["ACTIVE_STATES", "MISSING", "LibvirtHypervisor", "hypervisor_for"]

# Keep-alive: a probe every 5 s, the connection given up after 3 unanswered (15 s), instead of
# a call hanging on a host that went away.
KEEPALIVE_INTERVAL = 5
KEEPALIVE_COUNT = 3
# Connections per host for the pages' and API's calls (each used by one call at a time).
CONNECTIONS_PER_HOST = 4
_event_loop_lock = threading.Lock()
_event_loop_started = False
EVENT_THREAD = "libvirt-events"


def _event_loop_ensure() -> None:
    """libvirt's event loop, in a thread: keep-alives (and console streams) need one."""
    global _event_loop_started
    with _event_loop_lock:
        if _event_loop_started:
            return
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=run, name=EVENT_THREAD, daemon=True).start()
        _event_loop_started = True


def _on_event_loop(fn: Callable[[], None]) -> None:
    """Run `fn` once on libvirt's event loop thread, at its next turn."""

    def fire(timer: int, _opaque: object) -> None:
        libvirt.virEventRemoveTimeout(timer)
        fn()

    libvirt.virEventAddTimeout(0, fire, None)


def _ensure_not_on_event_loop() -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise RuntimeError("libvirt calls block; run them in a thread (sync_to_async)")


class LibvirtHypervisor:
    """The domains of one host, through a few libvirt connections (see `base.Hypervisor`).

    Each call has a connection to itself for as long as it runs, from a small pool
    (`CONNECTIONS_PER_HOST`): libvirt 9.0's client crashes when the calls of several threads
    meet on one connection (CVE-2024-4418, fixed in libvirt 10.3; Debian 12 ships 9.0). A call
    leaves a poll source behind when another thread wakes it up, and a later call from another
    thread runs that source on the first call's dead stack frame: cluster workers and the e2e
    portal died of it (a segfault in virNetClientIOEventFD) while serial consoles, screenshots
    and the pages' calls shared one connection. A move and each serial console have
    connections of their own too."""

    def __init__(
        self, name: str, uri: str, connect_uri: str | None = None, ssh: SshTarget | None = None
    ) -> None:
        self.name = name or uri
        self.uri = uri  # as the admin gave it; errors name it
        self.connect_uri = connect_uri or uri  # with the portal's key and known_hosts
        self.ssh = ssh  # how to reach the host's files (None: this machine)
        self._idle: list[libvirt.virConnect] = []  # open, and no call on them
        self._opened = 0  # idle, in a call, or being opened
        self._pool = threading.Condition()

    def _error(self, cls: type[HypervisorError], message: str) -> HypervisorError:
        return cls(message, uri=self.uri, host=self.name)

    # -- connection and error handling -------------------------------------------------

    @contextmanager
    def _lease(self) -> Iterator[libvirt.virConnect]:
        """A connection for one call, used by no other thread meanwhile; opened if none is idle
        and the pool has room, else the next one given back. A connection that failed
        (HypervisorUnavailable) is closed, not given back."""
        with self._pool:
            while not self._idle and self._opened >= CONNECTIONS_PER_HOST:
                self._pool.wait()
            conn = self._idle.pop() if self._idle else None
            if conn is None:
                self._opened += 1
        broken = True
        try:
            if conn is not None and not _alive(conn):
                _close(conn)
                conn = None
            if conn is None:
                conn = self._open()
            yield conn
            broken = False
        except HypervisorError as exc:
            broken = isinstance(exc, HypervisorUnavailable)
            raise
        finally:
            with self._pool:
                if broken or conn is None:
                    self._opened -= 1
                else:
                    self._idle.append(conn)
                self._pool.notify()
            if broken and conn is not None:
                _close(conn)

    def _open(self, *, keepalive: bool = True) -> libvirt.virConnect:
        """A new connection to the host, with keep-alive unless told otherwise (its probes are
        sent by libvirt's event loop thread: the one cross-thread wake-up left, see the class)."""
        _event_loop_ensure()
        try:
            conn = libvirt.open(self.connect_uri)
        except libvirt.libvirtError as exc:
            raise self._error(HypervisorUnavailable, _message(exc)) from None
        if keepalive and not self.connect_uri.startswith("test:"):
            try:
                conn.setKeepAlive(KEEPALIVE_INTERVAL, KEEPALIVE_COUNT)
            except libvirt.libvirtError:
                pass  # local connections without keep-alive support: nothing to notice
        return conn

    @contextmanager
    def _translated(self, domain_name: str | None = None) -> Iterator[None]:
        try:
            yield
        except libvirt.libvirtError as exc:
            code = exc.get_error_code()
            if code == libvirt.VIR_ERR_NO_DOMAIN:
                raise self._error(
                    DomainNotFound, f"domain {domain_name!r} is not defined on {self.name}"
                ) from None
            if code in _UNAVAILABLE_CODES or exc.get_error_domain() in _UNAVAILABLE_DOMAINS:
                raise self._error(HypervisorUnavailable, _message(exc)) from None
            raise self._error(HypervisorError, _message(exc)) from None

    def _call(self, fn: Callable[[libvirt.virConnect], T], domain_name: str | None = None) -> T:
        _ensure_not_on_event_loop()
        with LIBVIRT_CALL.labels(self.name).time(), self._lease() as conn, self._translated(domain_name):
            return fn(conn)

    def _domain(self, conn: libvirt.virConnect, name: str) -> libvirt.virDomain:
        return conn.lookupByName(name)

    # -- reads ---------------------------------------------------------------------------

    def version(self) -> str:
        """The libvirt and hypervisor versions, as a liveness check."""

        def dotted(v: int) -> str:
            return f"{v // 1000000}.{v // 1000 % 1000}.{v % 1000}"

        def read(conn: libvirt.virConnect) -> str:
            return f"libvirt {dotted(conn.getLibVersion())}, {conn.getType()} {dotted(conn.getVersion())}"

        return self._call(read)

    def states(self) -> dict[str, str]:
        """Every defined domain's name and state."""

        def read(conn: libvirt.virConnect) -> dict[str, str]:
            try:  # one call for every domain of the host
                records = conn.getAllDomainStats(libvirt.VIR_DOMAIN_STATS_STATE)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_SUPPORT:
                    raise
                return {dom.name(): _STATES.get(dom.state()[0], "unknown") for dom in conn.listAllDomains()}
            return {dom.name(): _STATES.get(stats.get("state.state"), "unknown") for dom, stats in records}

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
                    raise self._error(DomainRunning, f"{name} is already running")
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

    def read_log(self, path: str, *, max_bytes: int) -> bytes:
        """The end of a log on the host: read here, or through `ssh tail` (the host's key as
        recorded, the portal's own key) for a remote one."""
        if not path.startswith("/") or "/../" in path or any(c in path for c in "\0\n"):
            raise ValueError(f"not a log path: {path!r}")
        if self.ssh is None:
            try:
                with open(path, "rb") as handle:
                    handle.seek(0, os.SEEK_END)
                    handle.seek(max(0, handle.tell() - max_bytes))
                    return handle.read()
            except FileNotFoundError:
                return b""
            except OSError as exc:
                raise self._error(HypervisorError, f"cannot read {path}: {exc.strerror}") from None
        target = self.ssh
        command = f"tail -c {int(max_bytes)} -- {shlex.quote(path)} 2>/dev/null || true"
        try:
            result = subprocess.run(
                ["ssh", *ssh_options(target), f"{target.user}@{target.hostname}", command],  # noqa: S607 - the system's OpenSSH
                capture_output=True,
                timeout=15,
                check=True,
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            raise self._error(HypervisorUnavailable, f"reading {path} over SSH failed: {exc}") from None
        return result.stdout

    def send_keys(self, name: str, strokes: list[tuple[int, ...]], *, hold_ms: int) -> None:
        """Each keystroke is one virDomainSendKey (its keys pressed together, released after
        `hold_ms`); QEMU queues them in order, so text arrives as typed."""

        def run(conn: libvirt.virConnect) -> None:
            dom = self._active_domain(conn, name)
            for stroke in strokes:
                dom.sendKey(libvirt.VIR_KEYCODE_SET_LINUX, hold_ms, list(stroke), len(stroke), 0)

        self._call(run, name)

    def screenshot(self, name: str) -> bytes:
        """The running domain's screen as QEMU gives it (PNG here), without touching its console."""

        def run(conn: libvirt.virConnect) -> bytes:
            dom = self._active_domain(conn, name)
            stream = conn.newStream(0)
            try:
                dom.screenshot(stream, 0, 0)
                chunks = []
                while data := stream.recv(1 << 18):
                    chunks.append(data)
                stream.finish()
            except libvirt.libvirtError:
                with contextlib.suppress(libvirt.libvirtError):
                    stream.abort()
                raise
            return b"".join(chunks)

        return self._call(run, name)

    def open_serial(
        self, name: str, *, on_output: Callable[[bytes | None], None], force: bool = False
    ) -> LibvirtSerialStream:
        """Open the domain's serial console through libvirt's stream API (so through the
        connection itself, for remote hosts too): see `base.Hypervisor.open_serial`.

        Each serial console gets a connection of its own, without keep-alive, which after this
        call only libvirt's event loop thread touches (`LibvirtSerialStream`). libvirt 9.0's
        client leaves a poll source of a call behind when another thread wakes that call up (a
        keep-alive, a stream write, a second caller), and a later call on the same connection
        from another thread runs it on the first call's dead stack frame (CVE-2024-4418, fixed
        in libvirt 10.3; Debian 12 ships 9.0): cluster workers died of it while serial consoles
        shared the host's connection with the pages' calls."""
        _ensure_not_on_event_loop()
        _event_loop_ensure()
        try:
            conn = libvirt.open(self.connect_uri)
        except libvirt.libvirtError as exc:
            raise self._error(HypervisorUnavailable, _message(exc)) from None
        try:
            with self._translated(name):
                dom = self._active_domain(conn, name)
                stream = conn.newStream(libvirt.VIR_STREAM_NONBLOCK)
                flags = libvirt.VIR_DOMAIN_CONSOLE_FORCE if force else libvirt.VIR_DOMAIN_CONSOLE_SAFE
                try:
                    dom.openConsole(None, stream, flags)
                except libvirt.libvirtError as exc:
                    message = _message(exc)
                    if "console session exists" in message:
                        raise self._error(ConsoleBusy, f"the serial console of {name} is in use") from None
                    if (
                        exc.get_error_code() == libvirt.VIR_ERR_INTERNAL_ERROR
                        and "character device" in message
                    ):
                        raise self._error(NoSerialConsole, f"{name} has no serial console") from None
                    raise
        except BaseException:
            with contextlib.suppress(libvirt.libvirtError):
                conn.close()
            raise
        return LibvirtSerialStream(stream, on_output, conn)

    def migrate(
        self,
        name: str,
        *,
        to: Hypervisor,
        address: str,
        timeout: float,
        progress: Callable[[int, int], None],
    ) -> dict[str, int]:
        """Live migration, managed by this process (it holds both connections: no host needs
        credentials for the other); QEMU to QEMU over `address` (see `base.Hypervisor.migrate`).
        Storage is not copied: a disk-less guest, or a disk image both hosts see at the same
        path."""
        uri_host = f"[{address}]" if ":" in address else address
        params = {
            libvirt.VIR_MIGRATE_PARAM_URI: f"tcp://{uri_host}",
            libvirt.VIR_MIGRATE_PARAM_LISTEN_ADDRESS: address,
            # No SPICE client relocation ("seamless migration"): the client QEMU sees is the
            # portal's proxy, which cannot follow that way (its consoles reconnect through the
            # new host's tunnel instead). With a SPICE client connected, libvirt would wait for
            # a relocation that never completes; it skips relocating for a non-SPICE graphics
            # URI (qemu_migration.c, qemuMigrationSrcGraphicsRelocate).
            libvirt.VIR_MIGRATE_PARAM_GRAPHICS_URI: "vnc://127.0.0.1",
        }
        flags = (
            libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PERSIST_DEST | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
        )
        if not isinstance(to, LibvirtHypervisor):
            raise TypeError("libvirt migrates only to another libvirt host")
        destination = to

        def run(conn: libvirt.virConnect, target: libvirt.virConnect) -> dict[str, int]:
            dom = self._active_domain(conn, name)
            finished = threading.Event()
            timed_out = threading.Event()

            def watch() -> None:  # progress, and the timeout: the job is aborted, the VM stays
                # On a connection of its own: a call on the migrating connection while migrate3
                # runs crashed libvirt 9.0's client over SSH (segfault, in the e2e test).
                try:
                    watching = self._open()
                    job = watching.lookupByName(name)
                except (HypervisorError, libvirt.libvirtError):
                    return
                deadline = time.monotonic() + timeout
                try:
                    while not finished.wait(0.25):
                        with contextlib.suppress(libvirt.libvirtError):
                            info = job.jobInfo()  # type, elapsed, remaining, total, processed, left
                            if info[0] != libvirt.VIR_DOMAIN_JOB_NONE:
                                progress(int(info[3]), int(info[5]))
                        if time.monotonic() > deadline:
                            timed_out.set()
                            with contextlib.suppress(libvirt.libvirtError):
                                job.abortJob()
                            return
                finally:
                    with contextlib.suppress(libvirt.libvirtError):
                        watching.close()

            # QEMU 7.2's clipboard agent for VNC (qemu-vdagent) blocks migration: it leaves the
            # VM for the move and is plugged in again where the VM lands (or here, if it stays).
            unplugged = _unplug_unmigratable(dom)
            watcher = threading.Thread(target=watch, name=f"migrate-{name}", daemon=True)
            watcher.start()
            try:
                moved = dom.migrate3(target, params, flags)
            except libvirt.libvirtError as exc:
                why = f"it took longer than {timeout:.0f} s" if timed_out.is_set() else _message(exc)
                _plug(dom, unplugged)
                raise self._error(MigrationFailed, f"{name} was not moved to {to.name}: {why}") from None
            finally:
                finished.set()
                watcher.join()
            _plug(moved, unplugged)
            try:  # what the move took, as the destination recorded it
                done = moved.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
            except libvirt.libvirtError:
                done = {}
            return {
                "data_total": int(done.get("data_total", 0) or done.get("memory_total", 0)),
                "downtime_ms": int(done.get("downtime", 0)),
                "time_elapsed_ms": int(done.get("time_elapsed", 0)),
            }

        # Connections of its own on both sides, closed after: the move's long call shares
        # nothing with the pages' calls (seen: a screenshot's stream on the shared connection of
        # the source as the move began crashed the libvirt client). Without keep-alive: a probe
        # sent on the idle target connection just as migrate3 turned to it crashed the move's
        # process (CVE-2024-4418, caught by faulthandler in the e2e test); the watcher's own
        # connection keeps one, and its timeout ends a move to a host that went away.
        _ensure_not_on_event_loop()
        source = self._open(keepalive=False)
        try:
            target = destination._open(keepalive=False)
            try:
                with self._translated(name):
                    return run(source, target)
            finally:
                with contextlib.suppress(libvirt.libvirtError):
                    target.close()
        finally:
            with contextlib.suppress(libvirt.libvirtError):
                source.close()

    def _active_domain(self, conn: libvirt.virConnect, name: str) -> libvirt.virDomain:
        dom = self._domain(conn, name)
        if not dom.isActive():
            raise self._error(DomainNotRunning, f"{name} is not running")
        return dom


def _unplug_unmigratable(dom: libvirt.virDomain) -> list[str]:
    """Detach the live devices QEMU cannot migrate (the qemu-vdagent channel): their XML."""
    import xml.etree.ElementTree as ET

    devices = ET.fromstring(dom.XMLDesc(0)).find("devices")
    unplugged = []
    for channel in [] if devices is None else devices.findall("channel[@type='qemu-vdagent']"):
        device = ET.tostring(channel, encoding="unicode")
        dom.detachDeviceFlags(device, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        unplugged.append(device)
    return unplugged


def _plug(dom: libvirt.virDomain, devices: list[str]) -> None:
    """Attach again what `_unplug_unmigratable` detached (best effort: the VM runs either way)."""
    for device in devices:
        with contextlib.suppress(libvirt.libvirtError):
            dom.attachDeviceFlags(device, libvirt.VIR_DOMAIN_AFFECT_LIVE)


_STREAM_READABLE = libvirt.VIR_STREAM_EVENT_READABLE
_STREAM_WRITABLE = libvirt.VIR_STREAM_EVENT_WRITABLE
_STREAM_ENDED = libvirt.VIR_STREAM_EVENT_HANGUP | libvirt.VIR_STREAM_EVENT_ERROR


class LibvirtSerialStream:
    """A serial console as a non-blocking libvirt stream, driven by libvirt's event loop thread.

    Output is read when libvirt says the stream is readable and handed to `on_output` as it
    comes; input that the stream cannot take at once waits for it to become writable. Any end
    (EOF when QEMU exits, an error when another client forces the console) calls
    `on_output(None)` once and releases the stream.

    After it is opened, the stream and its own connection are used on libvirt's event loop
    thread only: reads and writes there (a write from another thread is queued and sent at the
    loop's next turn), and the release (its callback removed, the stream aborted, the
    connection closed) too (see `LibvirtHypervisor.open_serial` for why).
    """

    def __init__(
        self,
        stream: libvirt.virStream,
        on_output: Callable[[bytes | None], None],
        conn: libvirt.virConnect | None = None,
    ) -> None:
        self._stream = stream
        self._conn = conn  # its own, closed with it
        self._on_output = on_output
        # Re-entrant: `on_output` may answer the guest at once (write, from the event thread).
        self._lock = threading.RLock()
        self._pending = bytearray()  # input the stream could not take yet
        self._paused = False
        self._closed = False
        stream.eventAddCallback(_STREAM_READABLE | _STREAM_ENDED, self._event, None)

    def _interest(self) -> int:
        events = _STREAM_ENDED
        if not self._paused:
            events |= _STREAM_READABLE
        if self._pending:
            events |= _STREAM_WRITABLE
        return events

    def _event(self, stream: libvirt.virStream, events: int, _opaque: object) -> None:
        with self._lock:
            if self._closed:
                return
            try:
                if events & _STREAM_READABLE:
                    while not self._paused:
                        data = stream.recv(65536)
                        if data == -2:  # nothing more for now
                            break
                        if not data:  # EOF: QEMU closed the console
                            raise EOFError
                        self._on_output(data)
                if events & _STREAM_WRITABLE:
                    self._flush()
                if events & _STREAM_ENDED:
                    raise EOFError
                stream.eventUpdateCallback(self._interest())
            except (EOFError, libvirt.libvirtError):
                self._end(abort=True)

    def _flush(self) -> None:
        while self._pending:
            sent = self._stream.send(bytes(self._pending))
            if sent == -2:
                return
            del self._pending[:sent]

    def write(self, data: bytes) -> None:
        with self._lock:
            if self._closed:
                return
            self._pending += data
            if threading.current_thread().name != EVENT_THREAD:
                _on_event_loop(self._send_pending)
                return
        self._send_pending()

    def _send_pending(self) -> None:
        with self._lock:
            if self._closed:
                return
            try:
                self._flush()
                self._stream.eventUpdateCallback(self._interest())
            except libvirt.libvirtError:
                self._end(abort=True)

    def pause(self, paused: bool) -> None:
        with self._lock:
            if self._closed or self._paused == paused:
                return
            self._paused = paused
            try:
                self._stream.eventUpdateCallback(self._interest())
            except libvirt.libvirtError:
                self._end(abort=True)

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._end(abort=True, notify=False)

    def _end(self, *, abort: bool, notify: bool = True) -> None:
        """No more input or output; the stream itself is released on the event loop thread."""
        self._closed = True
        if threading.current_thread().name == EVENT_THREAD:
            self._release(abort)
        else:
            _on_event_loop(lambda: self._release(abort))
        if notify:
            self._on_output(None)

    def _release(self, abort: bool) -> None:
        releases = [self._stream.eventRemoveCallback, self._stream.abort if abort else self._stream.finish]
        if self._conn is not None:
            releases.append(self._conn.close)
        for release in releases:
            try:
                release()
            except libvirt.libvirtError:
                pass  # already gone with the connection or the domain


def _alive(conn: libvirt.virConnect) -> bool:
    try:
        return bool(conn.isAlive())
    except libvirt.libvirtError:
        return False


def _close(conn: libvirt.virConnect) -> None:
    with contextlib.suppress(libvirt.libvirtError):
        conn.close()


def _message(exc: libvirt.libvirtError) -> str:
    return (exc.get_error_message() or str(exc)).strip()


_hypervisors: dict[tuple[str, ...], LibvirtHypervisor] = {}
_hypervisors_lock = threading.Lock()


def hypervisor_for(host: Host) -> LibvirtHypervisor:
    """The shared hypervisor (and so connection) of a `Host`, or of a bare libvirt URI.

    A host whose URI, key or recorded host key changed gets a new connection: one made with
    the old settings must not outlive them."""
    if isinstance(host, str):
        key: tuple[str, ...] = (host, host, host)
    else:
        from console.hypervisor.ssh import connect_uri, ssh_target  # noqa: PLC0415

        key = (host.name, host.uri, connect_uri(host), host.ssh_host_key.strip())
    with _hypervisors_lock:
        if key not in _hypervisors:
            ssh = None if isinstance(host, str) else ssh_target(host)
            _hypervisors[key] = LibvirtHypervisor(key[0], key[1], key[2], ssh=ssh)
        return _hypervisors[key]
