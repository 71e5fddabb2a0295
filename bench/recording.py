"""What a recorded minute takes on disk, per protocol: the demo guest's console kept busy (a
listing scrolling without pause on its screen, or on its serial port), opened in Chromium
through the portal on Daphne, recorded (console.recording per-vm), for SECONDS; the recordings'
bytes per minute. The guest has a text console, no graphical desktop: a scrolling screen is the
busiest picture it makes, and the figure is for that picture (an idle one costs next to nothing).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from bench.browser import CHROMIUM, CHROMIUM_ARGS, _consoles_closed, _new_context, _remove, _vms
from bench.setup import World

# Started from the serial port's shell, in the background: the screen (tty1) or the serial
# port itself scrolls a listing for as long as the VM runs.
BUSY = {
    "screen": b"(while :; do ls -l /bin /sbin; done > /dev/tty1 2>&1 &)\r",
    "serial": b"(while :; do ls -l /bin; done &)\r",
}


def _busy(vm, where: str) -> None:  # noqa: ANN001 - a VirtualMachine
    """Wait for the guest's shell on its serial port, then start the busy loop."""
    from console.hypervisor import hypervisor_for

    output = bytearray()
    serial = hypervisor_for(vm.host).open_serial
    with ThreadPoolExecutor(1) as pool:  # Playwright's sync API runs an event loop in this thread
        opened = pool.submit(serial, vm.name, on_output=lambda d: output.extend(d or b""), force=True)
        stream = opened.result()
    try:
        deadline = time.monotonic() + 90
        while b"guest:~# " not in output:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{vm.name} never gave a shell prompt: {bytes(output[-300:])!r}")
            stream.write(b"\r")
            time.sleep(0.5)
        stream.write(BUSY[where])
        time.sleep(1)
    finally:
        stream.close()


def recorded_minutes(world: World, port: int, seconds: float) -> dict[str, float]:
    """{protocol: MiB per recorded minute} for VNC, SPICE and the serial console."""
    from django.conf import settings
    from playwright.sync_api import sync_playwright

    from console.models import ConsoleRecording, Host, VirtualMachine
    from console.vms import demo_guest_boot, vm_start

    host, _ = Host.objects.get_or_create(uri=settings.LIBVIRT_URI, defaults={"name": "local"})
    user = VirtualMachine.objects.get(pk=world.vm_id).owner
    # Booted to the shell (no boot menu), their consoles recorded.
    vms = _vms(
        user,
        host,
        "rec-",
        boot_menu=False,
        record_console=True,
        **demo_guest_boot(),
    )
    runs = [("vnc", vms["vnc"], "console", "screen"), ("spice", vms["spice"], "console", "screen")]
    runs.append(("serial", vms["vnc"], "serial", "serial"))
    results: dict[str, float] = {}
    try:
        for vm in vms.values():
            vm_start(vm=vm, user=user)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            for protocol, vm, page_path, where in runs:
                _busy(vm, where)
                context = _new_context(browser, world.cookie)
                page = context.new_page()
                said: list[str] = []
                page.on("console", lambda message, said=said: said.append(message.text))
                page.on("pageerror", lambda error, said=said: said.append(f"uncaught: {error}"))
                page.goto(f"http://127.0.0.1:{port}/vms/{vm.id}/{page_path}/")
                try:
                    page.wait_for_selector("#status.connected", timeout=30000)
                except Exception as exc:
                    status = page.evaluate("document.querySelector('#status')?.textContent")
                    raise RuntimeError(
                        f"the {protocol} {page_path} of {vm.name} did not connect within 30 s: "
                        f"{status!r}; its console: {said[-10:]!r}"
                    ) from exc
                before = time.monotonic()
                page.wait_for_timeout(seconds * 1000)
                context.close()
                elapsed = time.monotonic() - before
                _consoles_closed(vm)
                recorded = sum(
                    ConsoleRecording.objects.filter(vm=vm, protocol=protocol).values_list("bytes", flat=True)
                )
                results[protocol] = recorded / 2**20 * 60 / elapsed
            browser.close()
    finally:
        _remove(vms.values())
    return results
