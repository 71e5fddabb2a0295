"""End-to-end fixtures: the portal run as a user runs it (Daphne in its own process, its own
SQLite database), the real libvirtd, and Debian's Chromium driven by Playwright."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bench.browser import CHROMIUM, CHROMIUM_ARGS
from bench.setup import daphne_argv, free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
BIN = Path(sys.executable).parent
PASSWORD = "e2e-" + uuid.uuid4().hex


@dataclass
class Portal:
    """A running portal: its URL, its environment, and its manage.py."""

    url: str
    env: dict
    vm_name: str
    processes: list = field(default_factory=list)

    def manage(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True, text=True
        )
        if result.returncode:
            raise RuntimeError(f"manage.py {' '.join(args)}: {result.stderr}")
        return result.stdout

    def vm_id(self) -> int:
        """The demo VM's id (whatever order the tests created rows in)."""
        out = self.manage(
            "shell",
            "-c",
            f"from console.models import VirtualMachine as V; print(V.objects.get(name='{self.vm_name}').pk)",
        )
        return int(out.strip().splitlines()[-1])

    def daphne(self, name: str, extra_env: dict | None = None, server: str = "daphne") -> Portal:
        """Another server on the same database, e.g. with settings pointing at a standalone proxy."""
        port = free_port()
        if server == "uvicorn":
            argv = [
                str(BIN / "uvicorn"),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "portal.asgi:application",
            ]
        else:
            argv = daphne_argv(port)
        self.start(name, argv, port, extra_env)
        return Portal(
            url=f"http://127.0.0.1:{port}",
            env={**self.env, **(extra_env or {})},
            vm_name=self.vm_name,
            processes=self.processes,
        )

    def start(self, name: str, argv: list[str], port: int, extra_env: dict | None = None) -> subprocess.Popen:
        log = open(ARTIFACTS / f"{name}.log", "w")
        process = subprocess.Popen(
            argv, cwd=ROOT, env={**self.env, **(extra_env or {})}, stdout=log, stderr=log
        )
        self.processes.append(process)
        wait_for_port(port, process, name)
        return process


def grant_to_group(portal: Portal, group: str, role: str = "operator") -> None:
    """Grant `role` on the demo VM to the portal group `group` (made if missing), as an
    administrator would before anyone of it logged in."""
    portal.manage(
        "shell",
        "-c",
        "from django.contrib.auth.models import Group; from console.models import VirtualMachine, VmGrant; "
        f"group, _ = Group.objects.get_or_create(name='{group}'); "
        f"VmGrant.objects.get_or_create(vm=VirtualMachine.objects.get(name='{portal.vm_name}'), "
        f"group=group, role='{role}')",
    )


def deactivate(portal: Portal, username: str) -> None:
    """Make an account inactive, as an administrator does in admin."""
    portal.manage(
        "shell",
        "-c",
        "from django.contrib.auth.models import User; "
        f"User.objects.filter(username='{username}').update(is_active=False)",
    )


def virsh(*args: str) -> subprocess.CompletedProcess:
    from django.conf import settings

    return subprocess.run(["virsh", "-c", settings.LIBVIRT_URI, *args], capture_output=True, text=True)


@pytest.fixture(scope="session")
def portal(tmp_path_factory):
    """The portal on Daphne at 127.0.0.1:<free port>, with a demo admin and a demo VM of its own."""
    ARTIFACTS.mkdir(exist_ok=True)
    db = tmp_path_factory.mktemp("portal") / "db.sqlite3"
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{db}",
        "RECORDINGS_DIR": str(db.parent / "recordings"),
        "DEMO_PASSWORD": PASSWORD,
        "SECRET_KEY": uuid.uuid4().hex * 2,
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        # Short, so a test can watch a .vv password expire.
        "VV_PASSWORD_SECONDS": "10",
        # Every test opens the same VM's console as the same user, many times a minute.
        "CONSOLE_TICKETS_PER_MINUTE_PER_VM": "200",
        "CONSOLE_TICKETS_PER_MINUTE": "200",
    }
    for name in ("CONSOLE_PROXY_URL", "SPICE_PROXY_URL"):
        env.pop(name, None)
    portal = Portal(url=f"http://127.0.0.1:{port}", env=env, vm_name=f"e2e-{uuid.uuid4().hex[:8]}")
    portal.manage("migrate", "-v0")
    portal.manage("demosetup", "--vm-name", portal.vm_name)
    portal.start("daphne", daphne_argv(port), port)
    yield portal
    for process in portal.processes:
        process.terminate()
        process.wait(10)
    virsh("destroy", portal.vm_name)
    virsh("undefine", portal.vm_name)


@pytest.fixture(scope="session")
def websockify_portal(portal):
    """The portal with its console pages pointed at `manage.py consoleproxy` (websockify)."""
    port = free_port()
    manage = [sys.executable, "manage.py", "consoleproxy", "--listen", f"127.0.0.1:{port}"]
    portal.start("consoleproxy", manage, port)
    return portal.daphne("daphne-websockify", {"CONSOLE_PROXY_URL": f"ws://127.0.0.1:{port}/"})


@pytest.fixture(scope="session")
def uvicorn_portal(portal):
    """The portal served by uvicorn instead of Daphne (make run SERVER=uvicorn)."""
    return portal.daphne("uvicorn", server="uvicorn")


@pytest.fixture(scope="session")
def spiceproxy_portal(portal):
    """The portal with .vv files pointed at `manage.py spiceproxy`."""
    port = free_port()
    manage = [sys.executable, "manage.py", "spiceproxy", "--listen", f"127.0.0.1:{port}"]
    portal.start("spiceproxy", manage, port)
    return portal.daphne("daphne-spiceproxy", {"SPICE_PROXY_URL": f"http://127.0.0.1:{port}"})


@pytest.fixture(scope="session")
def xvfb():
    """A virtual screen with a white root window, so a VM's black console stands out."""
    display = next(f":{n}" for n in range(140, 200) if not Path(f"/tmp/.X11-unix/X{n}").exists())
    process = subprocess.Popen(
        ["Xvfb", display, "-screen", "0", "1024x768x24", "-wr", "-nolisten", "tcp"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not Path(f"/tmp/.X11-unix/X{display[1:]}").exists():
        if time.monotonic() > deadline or process.poll() is not None:
            raise RuntimeError("Xvfb did not start")
        time.sleep(0.05)
    yield display
    process.terminate()
    process.wait(10)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call":
        item.failed_call = report.failed
    return report


@pytest.fixture
def page(browser, request):
    """A fresh browser page; on failure its screenshot is saved under test-artifacts/."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    messages = []
    page.on("console", lambda message: messages.append(f"{message.type}: {message.text}"))
    page.on("pageerror", lambda error: messages.append(f"uncaught: {error}"))
    yield page
    if getattr(request.node, "failed_call", False):
        shot = ARTIFACTS / (re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name) + ".png")
        page.screenshot(path=shot)
        print(f"\nscreenshot of the failed page: {shot}")
        print("the page's console:\n  " + "\n  ".join(messages[-30:]))
    context.close()


def login(page, portal, username: str = "admin") -> None:
    page.goto(f"{portal.url}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{portal.url}/")


CANVAS_STATS = """(selector) => {
  const canvas = document.querySelector(selector);
  if (!canvas || !canvas.width || !canvas.height) return {colours: 0, lit: 0};
  const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  const colours = new Set();
  let lit = 0;
  for (let i = 0; i < data.length; i += 4) {
    colours.add((data[i] << 16) | (data[i + 1] << 8) | data[i + 2]);
    if (data[i] + data[i + 1] + data[i + 2] > 96) lit++;
  }
  return {colours: colours.size, lit};
}"""


def canvas_stats(page, selector: str) -> dict:
    return page.evaluate(CANVAS_STATS, selector)


def wait_for_canvas(page, selector: str, predicate, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    stats = canvas_stats(page, selector)
    while not predicate(stats):
        if time.monotonic() > deadline:
            raise AssertionError(f"the console canvas never showed the expected picture: {stats}")
        page.wait_for_timeout(100)
        stats = canvas_stats(page, selector)
    return stats
