"""The scale-out set-up on real parts: two workers behind HAProxy on PostgreSQL and Redis
(bin/cluster), and a VM on a second real libvirt host (bin/hv2) reached over SSH."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
import uuid
from pathlib import Path

import psutil
import psycopg
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from bench.setup import free_port
from console.models import Host
from tests.e2e.conftest import ARTIFACTS, PASSWORD, Portal, login, wait_for_canvas
from tests.e2e.test_attacks import Browser
from tests.e2e.test_browser_console import open_console_and_type_a_command
from tests.e2e.test_remote_viewer import download_vv, run_viewer
from tests.e2e.test_serial_console import run, terminal_text

ROOT = Path(__file__).resolve().parents[2]
HV2 = ROOT / "var" / "hv2"
pytestmark = [pytest.mark.hypervisor, pytest.mark.hv2, pytest.mark.browser]
METRICS_TOKEN = secrets.token_urlsafe(16)


def _two_free_ports() -> int:
    while True:
        base = free_port()
        try:
            with __import__("socket").socket() as sock:
                sock.bind(("127.0.0.1", base + 1))
            return base
        except OSError:
            continue


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, hv2):
    """bin/cluster up 2, on a database of its own; bin/cluster down after."""
    port = free_port()
    database = f"console_portal_e2e_{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "CLUSTER_DIR": str(tmp_path_factory.mktemp("cluster")),
        "PORT": str(port),
        "WORKER_BASE_PORT": str(_two_free_ports()),
        "SPICE_PROXY_PORT": str(free_port()),
        "CONSOLE_PROXY_PORT": str(free_port()),
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{database}",
        "REDIS_URL": "redis://127.0.0.1:6379/6",
        "DEMO_PASSWORD": PASSWORD,
        "SECRET_KEY": secrets.token_hex(32),
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "CSRF_TRUSTED_ORIGINS": f"http://127.0.0.1:{port}",
        "CONSOLE_RECHECK_SECONDS": "1",
        "CONSOLE_TICKET_SECONDS": "8",
        "CONSOLE_TICKETS_PER_MINUTE_PER_VM": "200",
        "CONSOLE_TICKETS_PER_MINUTE": "200",
        "VV_PASSWORD_SECONDS": "30",
        "METRICS_TOKEN": METRICS_TOKEN,
    }
    for name in ("CONSOLE_PROXY_URL", "SPICE_PROXY_URL", "PORTAL_WORKERS"):
        env.pop(name, None)
    subprocess.run([str(ROOT / "bin" / "cluster"), "up", "2"], env=env, check=True, timeout=300)
    portal = Portal(url=f"http://127.0.0.1:{port}", env=env, vm_name="hv2-demo")
    portal.manage(
        "shell",
        "-c",
        "from console.models import Host, VirtualMachine as V; from django.contrib.auth.models import User; "
        f"h = Host.objects.create(name='hv2', uri='qemu+ssh://root@10.231.7.2/system', "
        f"ssh_key_file='{HV2 / 'id_ed25519'}', "
        f"ssh_host_key=open('{HV2 / 'ssh_host_ed25519_key.pub'}').read()); "
        "from django.conf import settings as s; "
        "V.objects.create(name='hv2-demo', host=h, owner=User.objects.get(username='admin'), memory_mib=192, "
        "kernel=s.GUEST_DIR + '/vmlinuz', initrd=s.GUEST_DIR + '/initrd.img', "
        "kernel_cmdline='console=tty0 console=ttyS0')",
    )
    yield portal
    subprocess.run([str(ROOT / "bin" / "cluster"), "down"], env=env, timeout=120)
    for name in ("haproxy", "worker1", "worker2", "spiceproxy", "consoleproxy"):
        log = Path(env["CLUSTER_DIR"]) / f"{name}.log"
        if log.exists():
            (ARTIFACTS / f"cluster-{name}.log").write_text(log.read_text())
    with psycopg.connect("postgres://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    subprocess.run(
        [str(HV2 / "hv2-exec"), "virsh", "-c", "qemu:///system", "destroy", "hv2-demo"], capture_output=True
    )
    subprocess.run(
        [str(HV2 / "hv2-exec"), "virsh", "-c", "qemu:///system", "undefine", "hv2-demo"], capture_output=True
    )


def _workers(cluster) -> list[psutil.Process]:
    directory = Path(cluster.env["CLUSTER_DIR"])
    return [psutil.Process(int((directory / f"worker{n}.pid").read_text())) for n in (1, 2)]


def _hv2_host() -> Host:
    """hv2 as the portal knows it (not saved: the tests' own database is not the cluster's)."""
    return Host(
        name="hv2",
        uri="qemu+ssh://root@10.231.7.2/system",
        ssh_key_file=str(HV2 / "id_ed25519"),
        ssh_host_key=(HV2 / "ssh_host_ed25519_key.pub").read_text(),
    )


def test_serial_console_of_a_vm_on_the_second_host(page, cluster):
    """Through libvirt's own connection to hv2 (qemu+libssh), behind HAProxy: no port to tunnel."""
    _start_on_hv2(page, cluster, "vnc")
    page.goto(f"{cluster.url}/vms/{cluster.vm_id()}/serial/")
    page.wait_for_selector("#status.connected", timeout=20000)
    page.click("#terminal")
    deadline = time.monotonic() + 60
    while "guest:" not in terminal_text(page):
        assert time.monotonic() < deadline, terminal_text(page)
        page.keyboard.press("Enter")
        page.wait_for_timeout(1000)
    run(page, "uname -s; hostname", r"\nLinux\s+guest")


def _start_on_hv2(page, cluster, mode: str) -> None:
    cluster.manage(
        "shell",
        "-c",
        "from console.models import VirtualMachine as V; "
        f"V.objects.filter(name='hv2-demo').update(console_mode='{mode}')",
    )
    login(page, cluster)
    page.goto(f"{cluster.url}/vms/{cluster.vm_id()}/")
    assert "hv2" in page.inner_text("main")
    button = "Reboot" if page.locator("button:has-text('Reboot')").count() else "Start"
    page.click(f"button:has-text('{button}')")
    page.wait_for_selector(".messages >> text=console")
    assert f"{mode.upper()} console" in page.inner_text(".messages")


@pytest.mark.parametrize("mode", ["spice", "vnc"])
def test_a_console_of_a_vm_on_the_second_host_through_haproxy(page, cluster, mode):
    _start_on_hv2(page, cluster, mode)
    open_console_and_type_a_command(page, cluster, mode, host=_hv2_host())
    page.goto(f"{cluster.url}/")  # HAProxy logs a WebSocket when it ends
    time.sleep(1)
    log = (Path(cluster.env["CLUSTER_DIR"]) / "haproxy.log").read_text()
    assert "/ws/console/" in log and "token=" not in log  # HAProxy's log keeps no ticket


def test_a_ticket_issued_by_one_worker_is_admitted_by_the_other(cluster):
    browser = Browser(cluster)
    browser.running_vm()  # the demo VM, on the local host
    ticket = browser.ticket()
    w1, w2 = (f"127.0.0.1:{int(cluster.env['WORKER_BASE_PORT']) + n}" for n in (0, 1))
    for worker in (w1, w2):
        url = f"ws://{worker}{ticket['wsPath']}?token={ticket['token']}"
        with connect(url, origin=cluster.url, additional_headers={"Cookie": browser.cookie()}) as ws:
            assert ws.recv(timeout=10).startswith(b"RFB ")  # admitted, relayed
    time.sleep(9)  # CONSOLE_TICKET_SECONDS=8 here
    url = f"ws://{w2}{ticket['wsPath']}?token={ticket['token']}"
    with connect(url, origin=cluster.url, additional_headers={"Cookie": browser.cookie()}) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd.code == 4004  # expired, whichever worker is asked


def test_killing_the_serving_worker_costs_a_reconnect_and_no_record(page, cluster):
    _start_on_hv2(page, cluster, "vnc")
    page.click("a.button:text-is('Console')")
    page.wait_for_selector("#status.connected", timeout=20000)
    wait_for_canvas(page, "#vnc-screen canvas", lambda s: s["colours"] >= 2)
    # The session record names the worker relaying it.
    out = cluster.manage(
        "shell",
        "-c",
        "from console.models import ConsoleSession as S; "
        "print(S.objects.get(ended_at__isnull=True, vm__name='hv2-demo', via='channels').worker)",
    )
    serving = psutil.Process(int(out.strip().splitlines()[-1].rsplit(":", 1)[1]))
    assert serving in _workers(cluster)
    serving.send_signal(signal.SIGKILL)
    page.wait_for_selector("#status.connected", timeout=30000)  # through the other worker
    wait_for_canvas(page, "#vnc-screen canvas", lambda s: s["colours"] >= 2)
    deadline = time.monotonic() + 45
    while True:
        out = cluster.manage(
            "shell",
            "-c",
            "import json; from console.models import ConsoleSession as S; "
            "print(json.dumps(list(S.objects.order_by('id').values_list('end_reason', 'worker'))[-2:]))",
        )
        rows = __import__("json").loads(out.strip().splitlines()[-1])
        if rows[0][0] == "worker lost":
            break
        assert time.monotonic() < deadline, rows
        time.sleep(1)
    assert rows[1][0] == "" and rows[0][1] != rows[1][1]  # the new one open, on another worker
    subprocess.run([str(ROOT / "bin" / "cluster"), "up", "2"], env=cluster.env, check=True, timeout=120)


def test_the_second_host_down_leaves_the_first_hosts_vms_working(cluster):
    browser = Browser(cluster)
    hv2_vm = cluster.vm_id()
    local_vm = browser.vm_id = int(
        cluster.manage(
            "shell",
            "-c",
            "from console.models import VirtualMachine as V; print(V.objects.get(name='demo').pk)",
        )
        .strip()
        .splitlines()[-1]
    )
    pid = int((HV2 / "run" / "libvirtd.pid").read_text())
    os.kill(pid, signal.SIGTERM)
    try:
        time.sleep(1)
        page = browser.http.get(f"{cluster.url}/vms/{hv2_vm}/")
        assert page.status_code == 503 and "hv2" in page.text and page.headers["Retry-After"]
        ticket = browser.post(f"/vms/{hv2_vm}/console/ticket/", headers={"Accept": "application/json"})
        assert ticket.status_code == 503 and "hv2" in ticket.json()["error"]
        assert browser.http.get(f"{cluster.url}/vms/{local_vm}/").status_code == 200
        listing = browser.http.get(f"{cluster.url}/")  # what it can serve: 200, with a banner
        assert listing.status_code == 200 and "<strong>hv2</strong> does not answer" in listing.text
        api = browser.http.get(f"{cluster.url}/api/v1/vms/").json()
        assert api["hosts_unavailable"] == ["hv2"]
        assert {vm["name"]: vm["state"] for vm in api["items"]}["hv2-demo"] == "unknown"
    finally:
        subprocess.run([str(ROOT / "bin" / "hv2"), "up"], check=True, timeout=120)
    deadline = time.monotonic() + 30
    while browser.http.get(f"{cluster.url}/vms/{hv2_vm}/").status_code != 200:
        assert time.monotonic() < deadline, "hv2's VM did not come back"
        time.sleep(1)


@pytest.mark.viewer
def test_a_vv_of_the_second_hosts_vm_opens_in_remote_viewer_through_the_spice_proxy(
    page, cluster, xvfb, tmp_path
):
    _start_on_hv2(page, cluster, "spice")
    vv = download_vv(page, tmp_path)
    assert "proxy=http://127.0.0.1:" in vv.read_text()
    dark, png = run_viewer(vv, xvfb, "remote-viewer-hv2", expect_screen=True, timeout=25)
    assert dark > 200_000, f"remote-viewer did not show the VM's screen (see {png})"


def test_websockify_reaches_the_second_hosts_console_through_ssh(page, cluster):
    _start_on_hv2(page, cluster, "vnc")
    proxy_port = cluster.env["CONSOLE_PROXY_PORT"]
    out = cluster.manage(
        "shell",
        "-c",
        "from console.models import VirtualMachine as V; from console.tickets import console_ticket_issue; "
        "vm = V.objects.get(name='hv2-demo'); "
        f"print(console_ticket_issue(user=vm.owner, vm=vm, kind='websockify', origin='{cluster.url}').token)",
    )
    token = out.strip().splitlines()[-1]
    with connect(f"ws://127.0.0.1:{proxy_port}/?token={token}", origin=cluster.url) as ws:
        assert ws.recv(timeout=10).startswith(b"RFB ")  # hv2's VNC server, through ssh -W


def test_a_vnc_vv_for_the_second_host_says_plainly_why_it_cannot_work(page, cluster):
    _start_on_hv2(page, cluster, "vnc")
    page.click("button:has-text('Download .vv')")
    page.wait_for_selector(".messages .error")
    assert "remote-viewer takes no proxy for VNC" in page.inner_text(".messages")


def test_metrics_of_every_worker_from_any_worker(cluster):
    """Multi-process mode: each worker's /metrics reports the counters of all of them."""
    import requests
    from prometheus_client.parser import text_string_to_metric_families

    def started(port: int) -> float:
        response = requests.get(
            f"http://127.0.0.1:{port}/metrics",
            headers={"Authorization": f"Bearer {METRICS_TOKEN}"},
            timeout=10,
        )
        assert response.status_code == 200
        families = {f.name: f for f in text_string_to_metric_families(response.text)}
        return sum(s.value for s in families["console_sessions_started"].samples if s.name.endswith("_total"))

    base = int(cluster.env["WORKER_BASE_PORT"])
    assert requests.get(f"{cluster.url}/metrics", timeout=10).status_code == 401
    first, second = started(base), started(base + 1)
    assert first == second > 0  # the sessions the tests above opened, whichever worker relayed them


def test_a_client_cannot_write_its_own_address_into_the_records(cluster):
    """HAProxy sets X-Forwarded-For to the address it sees; a worker reached directly that
    trusts the header records only an IP address (a forged value is None, never a 500 on
    PostgreSQL's inet column)."""
    from tests.helpers import rfb_client_handshake

    browser = Browser(cluster)
    browser.running_vm()
    forged = {"Cookie": browser.cookie(), "X-Forwarded-For": "6.6.6.6"}
    ticket = browser.ticket()
    with connect(browser.socket_url(ticket), origin=cluster.url, additional_headers=forged) as ws:
        rfb_client_handshake(ws)
    worker = f"127.0.0.1:{int(cluster.env['WORKER_BASE_PORT'])}"
    ticket = browser.ticket()
    url = f"ws://{worker}{ticket['wsPath']}?token={ticket['token']}"
    junk = {"Cookie": browser.cookie(), "X-Forwarded-For": "<script>, 6.6.6.6"}
    with connect(url, origin=cluster.url, additional_headers=junk) as ws:
        rfb_client_handshake(ws)
    vv = browser.http.post(
        f"http://{worker}/vms/{browser.vm_id}/console.vv",
        headers={
            "X-CSRFToken": browser.http.cookies["csrftoken"],
            "Origin": cluster.url,
            "X-Forwarded-For": "nope",
        },
    )
    assert vv.status_code == 200
    time.sleep(1)
    addresses = (
        cluster.manage(
            "shell",
            "-c",
            "from console.models import ConsoleSession as S; "
            "print([s.client_address for s in S.objects.order_by('-started_at')[:3]])",
        )
        .strip()
        .splitlines()[-1]
    )
    # The .vv request's forged value is no address (recorded as none); Daphne itself falls back
    # to the peer for a WebSocket's; HAProxy's own is the peer it saw. Never the client's word.
    assert addresses == "[None, '127.0.0.1', '127.0.0.1']"
