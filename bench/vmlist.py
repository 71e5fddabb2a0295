"""The VM list with many VMs: its server time and the page's time to interactive in Chromium,
with 1000 VMs over 4 hosts against 48 VMs (one page) over the same hosts, in the same run.

The hosts are libvirt's test driver, each a node file of running domains, so the list asks
real libvirt connections for the VMs' states (one call per host, as for QEMU hosts). The goal:
the figures do not grow with the VM count beyond the page shown (ratio near 1).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from bench.browser import CHROMIUM, CHROMIUM_ARGS, _new_context
from bench.setup import World

HOSTS = 4
SIZES = {"48 VMs": 12, "1000 VMs": 250}  # VMs per host

NODE = """<node><cpu><nodes>1</nodes><sockets>1</sockets><cores>2</cores><threads>1</threads>
<active>2</active><mhz>2000</mhz></cpu><memory>8388608</memory>
{domains}</node>"""
DOMAIN = '<domain type="test"><name>{name}</name><memory>65536</memory><os><type>hvm</type></os></domain>'


def list_figures(world: World, port: int, repeats: int) -> dict[str, dict[str, float]]:
    """{"48 VMs": {"server_ms", "interactive_ms"}, "1000 VMs": {...}}, medians of `repeats`
    (0: not measured, a short run)."""
    if not repeats:
        return {}
    from django.contrib.auth import get_user_model
    from django.test import Client
    from playwright.sync_api import sync_playwright

    from console.models import Host, VirtualMachine

    user = get_user_model().objects.get(pk=world.user_id)
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-vmlist-") as tmp:
        for label, per_host in SIZES.items():
            VirtualMachine.objects.filter(name__startswith="list-").delete()
            Host.objects.filter(name__startswith="list-").delete()
            for h in range(HOSTS):
                names = [f"list-{h}-{n:04d}" for n in range(per_host)]
                node = Path(tmp) / f"{label.split()[0]}-{h}.xml"
                node.write_text(NODE.format(domains="\n".join(DOMAIN.format(name=n) for n in names)))
                host = Host.objects.create(name=f"list-{h}", uri=f"test://{node}")
                VirtualMachine.objects.bulk_create(
                    VirtualMachine(name=n, owner=user, host=host) for n in names
                )
            client = Client(SERVER_NAME="127.0.0.1")  # as the servers under test are addressed
            client.force_login(user)
            client.get("/")  # connections to the hosts opened, templates compiled
            server = []
            for _ in range(max(5, repeats * 5)):
                started = time.perf_counter()
                if client.get("/").status_code != 200:
                    raise RuntimeError("the VM list did not answer 200")
                server.append((time.perf_counter() - started) * 1000)
            interactive = []
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                context = _new_context(browser, world.cookie)
                page = context.new_page()
                for _ in range(repeats + 1):
                    page.goto(f"http://127.0.0.1:{port}/")
                    interactive.append(
                        page.evaluate("performance.getEntriesByType('navigation')[0].domInteractive")
                    )
                browser.close()
            results[label] = {
                "server_ms": statistics.median(server),
                "interactive_ms": statistics.median(interactive[1:]),  # the first warms the server
            }
        VirtualMachine.objects.filter(name__startswith="list-").delete()
        Host.objects.filter(name__startswith="list-").delete()
    return results


def list_lines(results: dict[str, dict[str, float]]) -> list[str]:
    small, large = results.get("48 VMs"), results.get("1000 VMs")
    if not small or not large:
        return []
    return [
        f"the VM list (50 a page; {HOSTS} test-driver hosts), median ms: server "
        f"{small['server_ms']:.1f} with 48 VMs, {large['server_ms']:.1f} with 1000 "
        f"({large['server_ms'] / small['server_ms']:.2f}x); time to interactive in Chromium "
        f"{small['interactive_ms']:.0f}, {large['interactive_ms']:.0f} "
        f"({large['interactive_ms'] / small['interactive_ms']:.2f}x)"
    ]
