"""Faults on the real stack: libvirtd stopping, VMs destroyed under open consoles, workers
stopped and killed mid-session. Each must end with a reason, recover, and leave nothing behind."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from bench.setup import daphne_argv, free_port, wait_for_port
from tests.e2e.conftest import ARTIFACTS, Portal, login, virsh, wait_for_canvas
from tests.e2e.test_attacks import Browser, close_code
from tests.helpers import rfb_client_handshake

pytestmark = [pytest.mark.hypervisor]

LIBVIRTD_PIDFILE = Path("/run/libvirtd.pid")


def libvirtd_answers() -> bool:
    return virsh("version").returncode == 0


@contextlib.contextmanager
def libvirtd_stopped():
    """Stops this machine's libvirtd for the test, and starts it again after (as bin/setup does)."""
    if os.geteuid() != 0 or not LIBVIRTD_PIDFILE.exists():
        pytest.skip("needs root and a libvirtd started by bin/setup")
    pid = int(LIBVIRTD_PIDFILE.read_text())
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "libvirtd did not stop"
        time.sleep(0.1)
    try:
        yield
    finally:
        subprocess.run(["libvirtd", "-d"], check=True)
        deadline = time.monotonic() + 30
        while not libvirtd_answers():
            assert time.monotonic() < deadline, "libvirtd did not come back"
            time.sleep(0.2)


def test_libvirtd_stopping_gives_clear_pages_and_everything_recovers(portal):
    browser = Browser(portal)
    portal.manage("globalconfig", "set", "kvm.consoleMode", "vnc")
    browser.running_vm()
    ticket = browser.ticket()
    ws_url = f"ws://{portal.url.split('://')[1]}{ticket['wsPath']}?token={ticket['token']}"
    held = {}
    holder = threading.Thread(
        target=lambda: held.setdefault("code", close_code(ws_url, portal.url, browser.cookie(), timeout=8))
    )
    holder.start()
    time.sleep(1)

    with libvirtd_stopped():
        listing = browser.http.get(f"{portal.url}/")
        assert listing.status_code == 200 and "Host <strong>local</strong> does not answer" in listing.text
        detail = browser.http.get(f"{portal.url}/vms/{browser.vm_id}/")
        assert detail.status_code == 503 and "does not answer" in detail.text
        refused = browser.post(f"/vms/{browser.vm_id}/console/ticket/")
        assert refused.status_code == 503 and refused.json()["error"].startswith("host local does not answer")
        # A console already open is QEMU's, not libvirtd's: it stays open (see README).
        holder.join(5)
        assert holder.is_alive() or held.get("code") is None
    holder.join(10)
    assert held["code"] is None  # never closed by the outage
    # Back without restarting the portal.
    assert browser.http.get(f"{portal.url}/").status_code == 200
    assert browser.ticket()["protocol"] == "vnc"


def _fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_a_vm_destroyed_under_its_console_60_times_leaks_nothing(portal):
    """60 sessions whose VM is destroyed under them, on 4 VMs at once (libvirt takes ~1.5 s
    to destroy a domain here, so one VM would take minutes)."""
    browser = Browser(portal)
    portal.manage("globalconfig", "set", "kvm.consoleMode", "vnc")
    names = [f"{portal.vm_name}-d{n}" for n in range(3)]
    vm_ids = [browser.vm_id] + [
        int(
            portal.manage(
                "shell",
                "-c",
                "from console.models import VirtualMachine as V; "
                f"print(V.objects.create(name='{name}', owner=V.objects.get(pk={browser.vm_id}).owner, "
                f"host=V.objects.get(pk={browser.vm_id}).host, memory_mib=64).pk)",
            )
            .strip()
            .splitlines()[-1]
        )
        for name in names
    ]
    vm_names = [portal.vm_name, *names]
    server = psutil.Process(portal.processes[0].pid)
    host = portal.url.split("://")[1]

    def one_round(vm_id: int, vm_name: str) -> int | None:
        browser.post(f"/vms/{vm_id}/start/")
        ticket = browser.post(f"/vms/{vm_id}/console/ticket/").json()
        url = f"ws://{host}{ticket['wsPath']}?token={ticket['token']}"
        codes = {}
        relaying = threading.Event()

        def hold():
            with connect(url, origin=portal.url, additional_headers={"Cookie": browser.cookie()}) as ws:
                rfb_client_handshake(ws)  # admitted, authenticated to QEMU, relaying
                relaying.set()
                try:
                    while True:
                        ws.recv(timeout=15)
                except ConnectionClosed as closed:
                    codes["code"] = closed.rcvd.code if closed.rcvd else 1006

        holder = threading.Thread(target=hold)
        holder.start()
        assert relaying.wait(10)
        virsh("destroy", vm_name)
        holder.join(15)
        return codes.get("code")

    def rounds(count: int) -> list:
        with ThreadPoolExecutor(len(vm_ids)) as pool:
            jobs = [
                pool.submit(lambda i=i: [one_round(vm_ids[i], vm_names[i]) for _ in range(count)])
                for i in range(len(vm_ids))
            ]
            return [code for job in jobs for code in job.result()]

    try:
        rounds(2)  # warm up: thread pools, connections, caches
        fds, threads, rss = _fd_count(server.pid), server.num_threads(), server.memory_info().rss
        codes = rounds(15)
        assert codes == [4011] * 60  # each ended with "the VM closed its console"
        time.sleep(1)
        assert _fd_count(server.pid) <= fds + 2
        assert server.num_threads() <= threads + 2
        assert server.memory_info().rss - rss < 16 * 2**20
        ended = portal.manage(
            "shell",
            "-c",
            "from console.models import ConsoleSession as S; "
            "print(S.objects.filter(ended_at__isnull=True, via='channels').count(), "
            "S.objects.filter(end_reason__in=['console closed', 'console connection lost']).count())",
        )
        still_open, closed_by_vm = map(int, ended.strip().splitlines()[-1].split())
        assert still_open == 0 and closed_by_vm >= 68
    finally:
        for name in names:
            virsh("destroy", name)
            virsh("undefine", name)


@pytest.fixture
def worker(portal):
    """A portal worker of its own on a fixed port, which a test may stop and start again."""
    port = free_port()
    env = {**portal.env, "CONSOLE_RECHECK_SECONDS": "1"}
    state = {"process": None}

    def start():
        log = open(ARTIFACTS / "worker.log", "a")
        process = subprocess.Popen(
            daphne_argv(port), cwd=Path(__file__).parents[2], env=env, stdout=log, stderr=log
        )
        wait_for_port(port, process, "worker")
        state["process"] = process
        return process

    start()
    yield Portal(url=f"http://127.0.0.1:{port}", env=env, vm_name=portal.vm_name), start, state
    if state["process"].poll() is None:
        state["process"].terminate()
        state["process"].wait(10)


def _sessions(portal, ids_after: int) -> list[tuple]:
    out = portal.manage(
        "shell",
        "-c",
        "import json; from console.models import ConsoleSession as S; "
        f"rows = S.objects.filter(id__gt={ids_after}, via='channels').order_by('id'); "
        "print(json.dumps([(s.id, s.end_reason) for s in rows]))",
    )
    return [tuple(row) for row in json.loads(out.strip().splitlines()[-1])]


@pytest.mark.browser
@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_worker_restarted_mid_session_costs_a_reconnect_and_no_record(page, portal, worker, how):
    node, start, state = worker
    portal.manage("globalconfig", "set", "kvm.consoleMode", "vnc")
    last = _sessions(portal, 0)
    last_id = last[-1][0] if last else 0
    login(page, node)
    page.goto(f"{node.url}/vms/{node.vm_id()}/")
    if page.locator("button:has-text('Start')").count():
        page.click("button:has-text('Start')")
    page.goto(f"{node.url}/vms/{node.vm_id()}/console/")
    page.wait_for_selector("#status.connected", timeout=20000)
    wait_for_canvas(page, "#vnc-screen canvas", lambda s: s["colours"] >= 2)

    state["process"].send_signal(how)
    state["process"].wait(15)
    start()  # the same address: HAProxy would send the page to another worker
    page.wait_for_selector("#status.connected", timeout=30000)
    wait_for_canvas(page, "#vnc-screen canvas", lambda s: s["colours"] >= 2)

    expected = "worker stopped" if how == signal.SIGTERM else "worker lost"
    deadline = time.monotonic() + 40
    while True:
        sessions = _sessions(portal, last_id)
        if len(sessions) >= 2 and sessions[0][1] == expected:
            break
        assert time.monotonic() < deadline, sessions
        time.sleep(1)
    assert sessions[-1][1] == ""  # the new session, open
