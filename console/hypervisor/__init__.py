"""Hypervisors: the contract (`base`) and its libvirt implementation (`libvirt`).

`hypervisor_for(host)` gives the shared `Hypervisor` of a `Host` (or of a bare libvirt URI).
"""

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
    NoSerialConsole,
    SerialStream,
)
from console.hypervisor.libvirt import hypervisor_for

__all__ = [
    "ACTIVE_STATES",
    "MISSING",
    "ConsoleBusy",
    "DomainNotFound",
    "DomainNotRunning",
    "DomainRunning",
    "Hypervisor",
    "HypervisorError",
    "HypervisorUnavailable",
    "NoSerialConsole",
    "SerialStream",
    "hypervisor_for",
]
