"""The .vv file flow, for the pages and the API alike: may this VM's console be reached from a
viewer, issue its ticket, render the file, record the download."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.conf import settings

from console.errors import ConsoleUnavailable
from console.hypervisor.ssh import ssh_target
from console.models import ConsoleTicket
from console.sessions import console_download_record
from console.tickets import console_endpoint, console_ticket_issue
from console.vv import VvFile, vv_render

if TYPE_CHECKING:
    from console.auth import User
    from console.models import VirtualMachine

VV_MAX_CONNECTIONS = 16  # remote-viewer opens a channel each for display, inputs, cursor, audio, USB...


class ConsoleUnreachable(ConsoleUnavailable):
    """No viewer outside the portal can reach this console; the message says what to do."""

    code = "console_unreachable"


def _loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"


def vv_unreachable(vm: VirtualMachine) -> str:
    """Why a .vv file for this VM could not reach its console, if it could not: consoles of
    remote hosts listen on that host's loopback, which only the portal's proxies reach. Asked
    before a ticket is issued, so a refusal costs no libvirt write."""
    if ssh_target(vm.host) is None or not _loopback(vm.host.console_client_address):
        return ""
    protocol = console_endpoint(vm)[0].type
    if protocol == "spice" and not settings.SPICE_PROXY_URL:
        return (
            f"{vm.name} runs on {vm.host.name}, whose consoles are reachable only through the "
            "portal's SPICE proxy, and none is configured (SPICE_PROXY_URL). Use the browser console."
        )
    if protocol == "vnc":
        return (
            f"{vm.name} runs on {vm.host.name} with a VNC console, which virt-viewer cannot reach: "
            "it listens on that host's loopback and remote-viewer takes no proxy for VNC. Use the "
            "browser console, or restart the VM with SPICE."
        )
    return ""


@dataclass(frozen=True)
class VvDownload:
    filename: str
    text: str


def vv_file_issue(
    *,
    user: User,
    vm: VirtualMachine,
    fullscreen: bool,
    session_key: str = "",
    api_token_id: int | None = None,
    client_address: str | None = None,
) -> VvDownload:
    """A .vv file for `vm`'s console, recorded as a download. Through the SPICE proxy its
    password is a one-time secret the proxy checks (the VM's never leaves the portal); a file
    that names the host (VNC, or no SPICE proxy) carries a fresh graphics password of the VM,
    valid VV_PASSWORD_SECONDS. ConsoleUnavailable (or ConsoleUnreachable) says why not."""
    problem = vv_unreachable(vm)
    if problem:
        raise ConsoleUnreachable(problem)
    issued = console_ticket_issue(
        user=user,
        vm=vm,
        kind=ConsoleTicket.Kind.VV,
        session_key=session_key,
        seconds=settings.VV_PASSWORD_SECONDS,
        max_connections=VV_MAX_CONNECTIONS,
        api_token_id=api_token_id,
        vv_spice_proxy=bool(settings.SPICE_PROXY_URL),
    )
    through_proxy = bool(settings.SPICE_PROXY_URL) and issued.protocol == "spice"
    text = vv_render(
        VvFile(
            type=issued.protocol,
            # Through the SPICE proxy the ticket stands as the host name: the proxy resolves it.
            host=issued.token if through_proxy else vm.host.console_client_address,
            port=issued.ticket.port,
            password=issued.vv_password,
            title=vm.name,
            # The proxy terminates SPICE on the plain port; TLS is for files naming the host.
            tls_port=None if through_proxy else issued.ticket.tls_port,
            ca=vm.host.spice_ca_cert,
            host_subject=vm.host.spice_host_subject,
            proxy=settings.SPICE_PROXY_URL if through_proxy else "",
            fullscreen=fullscreen,
        )
    )
    console_download_record(ticket=issued.ticket, client_address=client_address)
    return VvDownload(f"{vm.name}.vv", text)
