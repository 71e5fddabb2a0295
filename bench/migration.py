"""make bench ARGS=--scale, live migration: the demo guest moved from this host to hv2 with its
console open in Chromium through the portal on Daphne, over VNC, SPICE and the serial console.

For each: the move's time and the guest's downtime (libvirt's figures), and the console's gap:
the longest pause between two WebSocket messages the page received (as Playwright reports them,
within 20 ms) from the move's start until it has been connected again for a few seconds (the
guest keeps its console busy, a listing scrolling, so a pause is the move's). The goal is a gap
under 2 s beyond the downtime.
"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from bench.browser import CHROMIUM, CHROMIUM_ARGS, _new_context, _remove, wait_until
from bench.recording import _busy
from bench.setup import World

HOST_ADDRESS, HV2_ADDRESS = "10.231.7.1", "10.231.7.2"  # bin/hv2's veth pair
SETTLE_SECONDS = 4.0  # connected again for this long before the gap is read


def _message_times(page) -> list[float]:  # noqa: ANN001 - a Playwright page
    """When each WebSocket message reached `page` (time.monotonic), as Playwright reports them."""
    times: list[float] = []
    page.on("websocket", lambda ws: ws.on("framereceived", lambda _: times.append(time.monotonic())))
    return times


def migration_gaps(world: World, port: int) -> dict[str, dict[str, float]]:
    """{protocol: {"move_ms", "downtime_ms", "gap_ms", "beyond_ms"}}, one move each."""
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from playwright.sync_api import sync_playwright

    from console.livemigration import vm_migrate
    from console.models import Host, LiveMigration, VirtualMachine
    from console.vms import demo_guest_boot, vm_start

    local, _ = Host.objects.get_or_create(uri=settings.LIBVIRT_URI, defaults={"name": "local"})
    Host.objects.filter(pk=local.pk).update(migration_address=HOST_ADDRESS)
    Host.objects.filter(name="bench-hv2").update(migration_address=HV2_ADDRESS)
    hv2 = Host.objects.get(name="bench-hv2")
    staff, _ = get_user_model().objects.get_or_create(username="bench-mover", defaults={"is_staff": True})
    user = VirtualMachine.objects.get(pk=world.vm_id).owner
    runs = [("vnc", "vnc", "console", "screen"), ("spice", "spice", "console", "screen")]
    runs.append(("serial", "vnc", "serial", "serial"))
    results: dict[str, dict[str, float]] = {}
    pool = ThreadPoolExecutor(1)  # Django and libvirt off Playwright's event loop thread
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            for protocol, mode, page_path, where in runs:
                vm = VirtualMachine.objects.create(
                    name=f"bench-mig-{protocol}-{uuid.uuid4().hex[:4]}",
                    owner=user,
                    host=local,
                    console_mode=mode,
                    boot_menu=False,
                    **demo_guest_boot(),
                )
                try:
                    pool.submit(vm_start, vm=vm, user=user).result()
                    _busy(vm, where)
                    context = _new_context(browser, world.cookie)
                    page = context.new_page()
                    times = _message_times(page)
                    page.goto(f"http://127.0.0.1:{port}/vms/{vm.id}/{page_path}/")
                    try:
                        page.wait_for_selector("#status.connected", timeout=30000)
                    except Exception as exc:
                        raise RuntimeError(f"{protocol}: {page.inner_text('#status')}") from exc
                    page.wait_for_timeout(2000)
                    started = time.monotonic()
                    moving = pool.submit(vm_migrate, vm=vm, target=hv2, user=staff, in_process=True)
                    while not moving.done():  # Playwright delivers events while it waits
                        page.wait_for_timeout(20)
                    moved = moving.result()
                    if moved.state != LiveMigration.State.DONE:
                        raise RuntimeError(f"{vm.name} did not move: {moved.error}")
                    page.wait_for_timeout(1000)  # not time.sleep: Playwright reports events as it waits
                    wait_until(page, "document.querySelector('#status').classList.contains('connected')", 60)
                    page.wait_for_timeout(SETTLE_SECONDS * 1000)
                    context.close()
                    after = [t for t in times if t >= started]
                    gap = 1000 * max((b - a for a, b in zip(after, after[1:], strict=False)), default=0.0)
                    downtime = float(moved.downtime_ms or 0)
                    results[protocol] = {
                        "move_ms": float(moved.elapsed_ms or 0),
                        "downtime_ms": downtime,
                        "gap_ms": gap,
                        "beyond_ms": gap - downtime,
                    }
                finally:
                    vm.refresh_from_db()
                    pool.submit(_remove, [vm]).result()
        finally:
            browser.close()
            pool.shutdown()
    return results


def migration_table(results: dict[str, dict[str, float]]) -> list[str]:
    lines = [
        "Live migration to hv2, the demo guest (192 MiB) busy, its console open in Chromium "
        "(goal: gap under 2000 ms beyond the downtime):"
    ]
    for protocol, row in results.items():
        lines.append(
            f"  {protocol:8} move {row['move_ms']:7.0f} ms, downtime {row['downtime_ms']:5.0f} ms, "
            f"console gap {row['gap_ms']:7.0f} ms ({row['beyond_ms']:+.0f} ms beyond the downtime)"
        )
    return lines
