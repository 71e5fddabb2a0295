"""Figure 6: in a real browser, from opening a console page to its first drawn frame.

The portal's console page (ticket issued when the page is served) against the stock
spice-html5 and noVNC pages connecting through websockify, for a running SPICE VM and a
running VNC VM. Chromium is Debian's, driven by Playwright.
"""

from __future__ import annotations

import http.server
import os
import shutil
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from urllib.parse import quote

from bench.setup import ROOT, World

# Debian's package installs /usr/bin/chromium, Ubuntu's /usr/bin/chromium-browser.
CHROMIUM = (
    os.environ.get("CHROMIUM")
    or shutil.which("chromium")
    or shutil.which("chromium-browser")
    or "/usr/bin/chromium"
)
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]

# Records performance.now() (ms since navigation started) when a canvas first shows more
# than one colour, checking every animation frame.
FIRST_FRAME = """
window.__firstFrame = null;
(function check() {
  for (const canvas of document.querySelectorAll("canvas")) {
    if (!canvas.width || !canvas.height) continue;
    const w = Math.min(canvas.width, 320), h = Math.min(canvas.height, 120);
    const data = canvas.getContext("2d").getImageData(0, 0, w, h).data;
    for (let i = 4; i < data.length; i += 4) {
      if (data[i] !== data[0] || data[i + 1] !== data[1] || data[i + 2] !== data[2]) {
        window.__firstFrame = performance.now();
        return;
      }
    }
  }
  requestAnimationFrame(check);
})();
"""


def wait_until(page, expression: str, timeout: float = 20) -> None:
    """Wait until `expression` is true in the page. Polled with page.evaluate, which the page's
    Content-Security-Policy does not govern (Playwright's wait_for_function compiles its
    predicate with eval, which the portal's policy rightly forbids)."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{expression!r} did not become true within {timeout} s")
        page.wait_for_timeout(25)


def _static_server(root: Path) -> tuple[http.server.ThreadingHTTPServer, int]:
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


def _time_to_first_frame(browser, url: str, cookie: str | None = None) -> float:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    if cookie:
        name, value = cookie.split("=", 1)
        context.add_cookies([{"name": name, "value": value, "domain": "127.0.0.1", "path": "/"}])
    page = context.new_page()
    page.add_init_script(FIRST_FRAME)
    try:
        page.goto(url)
        try:
            wait_until(page, "window.__firstFrame !== null", timeout=20)
        except Exception as exc:
            shot = Path(tempfile.gettempdir()) / "console-bench-ttff-failed.png"
            page.screenshot(path=shot)
            raise RuntimeError(
                f"no frame drawn at {url.split('?')[0]} within 20 s (screenshot: {shot})"
            ) from exc
        return page.evaluate("window.__firstFrame")
    finally:
        context.close()


def first_frames(world: World, repeats: int, portal_paths) -> dict[str, dict[str, list[float]]]:
    """{path name: {"ttff_spice_ms": [...], "ttff_vnc_ms": [...]}}"""
    from django.conf import settings
    from playwright.sync_api import sync_playwright

    from console.hypervisor import hypervisor_for
    from console.models import Host, VirtualMachine
    from console.tickets import console_ticket_issue
    from console.vms import vm_start

    host, _ = Host.objects.get_or_create(uri=settings.LIBVIRT_URI, defaults={"name": "local"})
    user = VirtualMachine.objects.get(pk=world.vm_id).owner
    vms = {
        mode: VirtualMachine.objects.create(
            name=f"bench-{mode}-{uuid.uuid4().hex[:6]}",
            owner=user,
            host=host,
            console_mode=mode,
            boot_menu=True,
        )
        for mode in ("spice", "vnc")
    }
    web_root = Path(tempfile.mkdtemp(prefix="console-bench-web-"))
    # The stock page comes with Debian's package; the portal serves none of its HTML pages.
    (web_root / "spice-html5").symlink_to("/usr/share/spice-html5")
    (web_root / "novnc").symlink_to(ROOT / "static" / "novnc")
    shutil.copy(Path(__file__).parent / "stock_novnc.html", web_root / "stock_novnc.html")
    server, web_port = _static_server(web_root)
    websockify = next(p for p in portal_paths if p.name == "websockify")
    results: dict[str, dict[str, list[float]]] = {}
    try:
        for vm in vms.values():
            vm_start(vm=vm, user=user)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            for _ in range(repeats):
                for mode, vm in vms.items():
                    key = f"ttff_{mode}_ms"
                    for path in portal_paths:
                        if path.ws_path is None or path is websockify:
                            continue
                        url = f"http://127.0.0.1:{path.port}/vms/{vm.id}/console/"
                        results.setdefault(path.name, {}).setdefault(key, []).append(
                            _time_to_first_frame(browser, url, world.cookie)
                        )
                    # Playwright's sync API runs an event loop in this thread; libvirt must not.
                    with ThreadPoolExecutor(1) as pool:
                        issued = pool.submit(
                            console_ticket_issue,
                            user=user,
                            vm=vm,
                            kind="websockify",
                            origin=f"http://127.0.0.1:{web_port}",  # the stock pages' server
                        ).result()
                    if mode == "spice":
                        url = (
                            f"http://127.0.0.1:{web_port}/spice-html5/spice_auto.html?host=127.0.0.1"
                            f"&port={websockify.port}&path={quote('?token=' + issued.token)}"
                            f"&password={quote(issued.password)}"
                        )
                    else:
                        ws_url = f"ws://127.0.0.1:{websockify.port}/?token={issued.token}"
                        url = (
                            f"http://127.0.0.1:{web_port}/stock_novnc.html?url={quote(ws_url)}"
                            f"&password={quote(issued.password)}"
                        )
                    name = "stock page via websockify"
                    results.setdefault(name, {}).setdefault(key, []).append(
                        _time_to_first_frame(browser, url)
                    )
            browser.close()
    finally:
        server.shutdown()
        shutil.rmtree(web_root, ignore_errors=True)
        for vm in vms.values():
            hypervisor = hypervisor_for(host.uri)
            for step in (hypervisor.destroy, hypervisor.undefine):
                try:
                    step(vm.name)
                except Exception:  # noqa: BLE001 - best-effort clean-up
                    pass
    return results
