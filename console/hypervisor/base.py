"""The hypervisor contract: what the portal asks of a host, and the errors it may answer with.

In the manner of `django.contrib.sessions.backends.base`: this module says which operations
a hypervisor must provide; `console.hypervisor.libvirt` provides them over libvirt (local or
remote). Every method blocks, so callers run them off the event loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from django.utils.translation import gettext_noop

from console.errors import PortalError

ACTIVE_STATES = {"running", "paused", "shutting down", "suspended"}
MISSING = "missing"
# Every state a VM is shown in, for the translations (pages show them translated, the API as is).
STATE_WORDS = (
    gettext_noop("running"),
    gettext_noop("paused"),
    gettext_noop("shutting down"),
    gettext_noop("shut off"),
    gettext_noop("crashed"),
    gettext_noop("suspended"),
    gettext_noop("missing"),
    gettext_noop("unknown"),
)


class HypervisorError(PortalError):
    """A hypervisor operation failed; the message says why, in the hypervisor's words (which can
    quote files and configuration on the host: shown to staff only)."""

    status = 502
    code = "hypervisor_error"

    def __init__(self, message: str, *, uri: str, host: str = "") -> None:
        super().__init__(message)
        self.uri = uri
        self.host = host

    def public_message(self, *, staff: bool) -> str:
        detail = str(self) if staff else "an administrator can see why in the log"
        return f"the hypervisor refused: {detail}"


class HypervisorUnavailable(HypervisorError):
    """The hypervisor does not answer: libvirtd down, host unreachable, access refused."""

    status = 503
    code = "host_unavailable"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "15"}  # libvirt's keep-alive notices a host back within that

    def public_message(self, *, staff: bool) -> str:
        detail = f": {self.message}" if staff else ""
        return f"host {self.host or self.uri} does not answer{detail}"

    def __str__(self) -> str:
        return f"{self.host} does not answer: {self.message}" if self.host else self.message


class DomainNotFound(HypervisorError):
    """No domain of that name is defined on the hypervisor."""


class DomainRunning(HypervisorError):
    """The operation needs a stopped domain."""


class DomainNotRunning(HypervisorError):
    """The operation needs a running domain."""


class ConsoleBusy(HypervisorError):
    """Another client holds the domain's serial console (libvirt lets one at a time write)."""


class NoSerialConsole(HypervisorError):
    """The domain has no serial console to open."""


class MigrationFailed(HypervisorError):
    """A live migration did not complete (refused, failed or timed out): the domain runs where
    it was."""


class SerialStream(Protocol):
    """An open serial console. Its output goes to the callback given to `open_serial`."""

    def write(self, data: bytes) -> None:
        """Send bytes to the guest's serial port (blocks briefly)."""

    def pause(self, paused: bool) -> None:
        """Stop (or resume) reading the guest's output, while the client catches up."""

    def close(self) -> None:
        """Close the console, releasing it for the next client."""


class Hypervisor(Protocol):
    """Operations on the domains of one host."""

    name: str
    uri: str

    def version(self) -> str:
        """The hypervisor's version: a liveness check."""

    def states(self) -> dict[str, str]:
        """Every defined domain's name and state (one call for the whole host)."""

    def state(self, name: str) -> str:
        """One domain's state, or MISSING."""

    def domain_id(self, name: str) -> int | None:
        """The running domain's ID (new on every start), or None when it is not running."""

    def xml(self, name: str, *, secure: bool = False, inactive: bool = False) -> str:
        """A domain's XML: the live one, or the persistent one."""

    def define_and_start(self, name: str, xml: str) -> None:
        """Define the domain and start it; on failure put the old definition back."""

    def shutdown(self, name: str) -> None:
        """Ask the guest to shut down (ACPI)."""

    def destroy(self, name: str) -> None:
        """Power the domain off at once."""

    def undefine(self, name: str) -> None:
        """Remove a stopped domain's definition."""

    def update_graphics(self, name: str, device_xml: str) -> None:
        """Change the live graphics device (its password) of a running domain."""

    def read_log(self, path: str, *, max_bytes: int) -> bytes:
        """The last `max_bytes` of a log file libvirt writes on the host (a serial log); b"" if
        there is none yet."""

    def send_keys(self, name: str, strokes: list[tuple[int, ...]], *, hold_ms: int) -> None:
        """Press each keystroke's keys together (Linux key codes), one keystroke after another."""

    def screenshot(self, name: str) -> bytes:
        """The running domain's screen as an image (PNG or PPM), taken without its console."""

    def migrate(
        self,
        name: str,
        *,
        to: Hypervisor,
        address: str,
        timeout: float,
        progress: Callable[[int, int], None],
    ) -> dict[str, int]:
        """Live-migrate the running domain to the hypervisor `to`, whose QEMU listens for it on
        `address` only; `progress(total, remaining)` gets the memory still to move as it goes.
        The domain is defined there and no longer here once it returns, with what the move took
        (data_total bytes, downtime_ms, time_elapsed_ms); MigrationFailed (the domain running
        here, as before) when it did not complete within `timeout` seconds or either side
        refused."""

    def open_serial(
        self, name: str, *, on_output: Callable[[bytes | None], None], force: bool = False
    ) -> SerialStream:
        """Open the running domain's serial console; ConsoleBusy when another client holds it,
        unless `force` takes it from them. `on_output` gets the guest's output as it comes,
        from another thread, then None once when the console closes (the VM stopped, someone
        took it over)."""
