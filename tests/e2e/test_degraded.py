"""Degraded states answer plainly, on the real stack: the portal on a PostgreSQL instance of the
tests' own, stopped and started under a logged-in browser with an open console."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
import pytest
import requests

from bench.setup import daphne_argv, free_port
from tests.e2e.conftest import PASSWORD, Portal, virsh, wait_for_canvas
from tests.e2e.test_attacks import Browser
from tests.e2e.test_browser_console import CANVAS, start_vm_in_mode, type_a_marker
from tests.helpers import SerialReader, rfb_client_handshake

pytestmark = [pytest.mark.hypervisor, pytest.mark.browser]


class OwnPostgres:
    """A PostgreSQL cluster of the tests' own (initdb, on 127.0.0.1 and a free port), which a
    test may stop and start: the machine's own instance is never touched."""

    def __init__(self) -> None:
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
        if not bins or shutil.which("runuser") is None:
            pytest.skip("PostgreSQL's server binaries are not installed")
        self.bin = bins[-1]
        self.dir = Path(tempfile.mkdtemp(prefix="console-portal-pg-", dir="/var/tmp"))
        self.dir.chmod(0o755)
        shutil.chown(self.dir, "postgres", "postgres")
        self.port = free_port()
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/postgres"
        self._as_postgres(
            str(self.bin / "initdb"), "-D", str(self.dir / "data"), "-A", "trust", "-U", "postgres"
        )
        self.start()

    def _as_postgres(self, *argv: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *argv], check=True, capture_output=True, timeout=120
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1"
        self._as_postgres(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.dir / "data"),
            "-o",
            options,
            "-l",
            str(self.dir / "log"),
            "-w",
            "start",
        )

    def stop(self) -> None:
        self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def pg_portal():
    database = OwnPostgres()
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database.url,
        "DEMO_PASSWORD": PASSWORD,
        "SECRET_KEY": uuid.uuid4().hex * 2,
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "CONSOLE_TICKETS_PER_MINUTE_PER_VM": "200",
        "CONSOLE_TICKETS_PER_MINUTE": "200",
    }
    for name in ("CONSOLE_PROXY_URL", "SPICE_PROXY_URL", "REDIS_URL"):
        env.pop(name, None)
    portal = Portal(url=f"http://127.0.0.1:{port}", env=env, vm_name=f"e2e-pg-{uuid.uuid4().hex[:6]}")
    portal.manage("migrate", "-v0")
    portal.manage("demosetup", "--vm-name", portal.vm_name)
    portal.start("daphne-postgres", daphne_argv(port), port)
    portal.database = database
    yield portal
    for process in portal.processes:
        process.terminate()
        process.wait(10)
    virsh("destroy", portal.vm_name)
    virsh("undefine", portal.vm_name)
    database.remove()


def test_the_database_down_answers_plainly_and_open_consoles_keep_working(pg_portal, page):
    from django.conf import settings

    start_vm_in_mode(page, pg_portal, "vnc")
    page.click("a.button:text-is('Console')")
    page.wait_for_selector("#status.connected", timeout=20000)
    wait_for_canvas(page, CANVAS["vnc"], lambda s: s["colours"] >= 2 and s["lit"] > 200)
    token = pg_portal.manage(
        "shell",
        "-c",
        "from console.apitokens import api_token_create; from django.contrib.auth.models import User; "
        "print(api_token_create(user=User.objects.get(username='admin'), name='e2e')[1])",
    ).split()[-1]
    browser = Browser(pg_portal)
    reader = SerialReader(settings.LIBVIRT_URI, pg_portal.vm_name)
    reader.wait_for_prompt()
    pg_portal.database.stop()
    try:
        listing = browser.http.get(f"{pg_portal.url}/")
        assert listing.status_code == 503 and listing.headers["Retry-After"]
        assert (
            "database does not answer" in listing.text
            and "Consoles already open keep working" in listing.text
        )
        login = requests.get(f"{pg_portal.url}/accounts/login/", timeout=10)
        assert login.status_code == 503 and "database does not answer" in login.text
        api = requests.get(
            f"{pg_portal.url}/api/v1/vms/", headers={"Authorization": f"Bearer {token}"}, timeout=10
        )
        assert api.status_code == 503 and api.headers["Retry-After"]
        assert api.json()["error"]["code"] == "database_unavailable"
        ticket = browser.post(f"/vms/{browser.vm_id}/console/ticket/", headers={"Accept": "application/json"})
        assert ticket.status_code == 503 and ticket.json()["code"] == "database_unavailable"
        ready = requests.get(f"{pg_portal.url}/readyz", timeout=10)
        assert ready.status_code == 503 and ready.json()["database"].startswith("failed")
        # The console opened before stays open and keeps typing into the guest, across more
        # than one of its rechecks (which fail, and are tried again).
        type_a_marker(page, CANVAS["vnc"], reader, "nodb")
        time.sleep(5)
        assert "connected" in page.get_attribute("#status", "class")
    finally:
        pg_portal.database.start()
        reader.close()
    deadline = time.monotonic() + 20
    while browser.http.get(f"{pg_portal.url}/").status_code != 200:
        assert time.monotonic() < deadline, "the portal did not come back with its database"
        time.sleep(0.5)
    assert "connected" in page.get_attribute("#status", "class")


def test_a_password_the_vm_got_but_the_database_lost_costs_the_next_console_nothing(pg_portal):
    """A .vv file that names the host rotates the VM's password; the database fails to record
    it (a trigger stands for the database going away at that moment): QEMU has a password the
    portal does not. The next console's proxy is refused, reads the password again, rotates it
    itself and connects; the client sees none of it."""
    browser = Browser(pg_portal)
    pg_portal.manage("globalconfig", "set", "kvm.consoleMode", "vnc")
    browser.running_vm()
    rfb_client_handshake(browser.socket(browser.ticket())).ws.close()  # a password the portal knows
    with psycopg.connect(pg_portal.database.url, autocommit=True) as db:
        before = db.execute("SELECT rotations FROM console_graphicssecret").fetchone()[0]
        db.execute(
            "CREATE FUNCTION gone() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'the database went away'; END $$"
        )
        db.execute(
            "CREATE TRIGGER gone BEFORE UPDATE ON console_graphicssecret FOR EACH ROW "
            "WHEN (NEW.password IS DISTINCT FROM OLD.password) EXECUTE FUNCTION gone()"
        )
        try:
            vv = browser.post(f"/vms/{browser.vm_id}/console.vv")
            assert vv.status_code == 503 and "database does not answer" in vv.text
        finally:
            db.execute("DROP TRIGGER gone ON console_graphicssecret")
        reader = rfb_client_handshake(browser.socket(browser.ticket()))  # connects, refused or not
        reader.ws.close()
        after = db.execute("SELECT rotations FROM console_graphicssecret").fetchone()[0]
    assert after == before + 1  # the proxy's own rotation, after QEMU refused the lost one
