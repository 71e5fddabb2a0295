"""Consoles follow a VM that moves (live migration) in Chromium: the demo guest moves from this
host to the second one (bin/hv2) and back from its page's "Move" form, with its console open in
another tab over VNC, over SPICE and on the serial console; after each move the console reconnects
by itself and a marker typed into it reaches the guest's shell there (read from its serial port).
Host maintenance, from admin's actions, empties this host the same way."""

from __future__ import annotations

import pytest
from django.conf import settings

from bench.browser import wait_until
from tests.e2e.conftest import login, wait_for_canvas
from tests.e2e.test_browser_console import CANVAS, start_vm_in_mode, type_a_marker
from tests.e2e.test_cluster import HV2, _hv2_host
from tests.e2e.test_serial_console import open_serial, run, wait_for_shell
from tests.helpers import SerialReader

pytestmark = [pytest.mark.hypervisor, pytest.mark.hv2, pytest.mark.browser]

HOST_ADDRESS, HV2_ADDRESS = "10.231.7.1", "10.231.7.2"


@pytest.fixture
def hosts(portal, hv2):
    """The portal's own host and hv2, each with its migration address; the VM back home after."""
    hv2_host = _hv2_host()
    portal.manage(
        "shell",
        "-c",
        "from console.models import Host; "
        f"Host.objects.filter(name='local').update(migration_address='{HOST_ADDRESS}'); "
        f"Host.objects.update_or_create(name='hv2', defaults=dict(uri='{hv2_host.uri}', "
        f"ssh_key_file='{HV2 / 'id_ed25519'}', ssh_host_key={hv2_host.ssh_host_key.strip()!r}, "
        f"migration_address='{HV2_ADDRESS}'))",
    )
    yield
    # Wherever a failure left it: stopped, and home.
    portal.manage(
        "shell",
        "-c",
        "from console.models import Host, VirtualMachine as V; "
        "from console.hypervisor import hypervisor_for; "
        f"vm = V.objects.get(name='{portal.vm_name}'); hv2 = Host.objects.get(name='hv2'); "
        "import contextlib\n"
        "with contextlib.suppress(Exception): hypervisor_for(hv2).destroy(vm.name)\n"
        "with contextlib.suppress(Exception): hypervisor_for(hv2).undefine(vm.name)\n"
        "V.objects.filter(pk=vm.pk).update(host=Host.objects.get(name='local')); "
        "Host.objects.update(maintenance=False)",
    )


def move(browser, portal, to: str) -> None:
    """As staff, from the VM's page in a tab of its own: Move, then wait until it says moved."""
    admin = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
    try:
        login(admin, portal)
        admin.click(f"text={portal.vm_name}")
        admin.select_option("#migrate-form select", label=to)
        admin.click("#migrate-form button")
        admin.wait_for_selector(f".messages >> text=Moving {portal.vm_name} to {to}")
        # The page follows the move, then reloads to say where the VM is.
        admin.wait_for_selector(f"#migration-state >> text=to {to} at", timeout=60000)
        assert "failed" not in admin.inner_text("#migration-state")
    finally:
        admin.context.close()


WATCH_STATUS = """() => {
  window.statuses = [];
  new MutationObserver(() => window.statuses.push(document.querySelector('#status').textContent))
    .observe(document.querySelector('#status'), {childList: true, characterData: true, subtree: true});
}"""


def followed(page, words: str) -> None:
    """The page said the VM was moving (`words`), then connected again by itself."""
    wait_until(page, f"window.statuses.some(s => s.includes({words!r}))", timeout=60)
    wait_until(page, "document.querySelector('#status').classList.contains('connected')", timeout=30)
    page.evaluate(WATCH_STATUS)


def host_of(to: str):
    """The host to read the guest's serial port on, as the tests reach it."""
    from django.conf import settings

    return _hv2_host() if to == "hv2" else settings.LIBVIRT_URI


@pytest.mark.parametrize("mode", ["vnc", "spice"])
def test_a_browser_console_follows_the_vm_there_and_back(page, browser, portal, hosts, mode):
    start_vm_in_mode(page, portal, mode)
    page.click("a.button:text-is('Console')")
    page.wait_for_selector("#status.connected", timeout=20000)
    wait_for_canvas(page, CANVAS[mode], lambda s: s["colours"] >= 2 and s["lit"] > 200)
    page.evaluate(WATCH_STATUS)
    for to in ("hv2", "local"):
        move(browser, portal, to)
        # The console said why it closed and reconnected by itself, to the VM's new host.
        followed(page, "moving to another host")
        wait_for_canvas(page, CANVAS[mode], lambda s: s["colours"] >= 2 and s["lit"] > 200)
        reader = SerialReader(host_of(to), portal.vm_name)
        try:
            reader.wait_for_prompt()
            type_a_marker(page, CANVAS[mode], reader, f"{mode}-{to}")
        finally:
            reader.close()


def test_the_serial_console_follows_the_vm_there_and_back(page, browser, portal, hosts):
    from tests.e2e.test_serial_console import start_vm

    start_vm(portal)
    open_serial(page, portal)
    wait_for_shell(page)
    page.evaluate(WATCH_STATUS)
    for to in ("hv2", "local"):
        move(browser, portal, to)
        followed(page, f"moved to {to}")
        run(page, f"echo serial-{to}-$((6*7))", f"serial-{to}-42")


def host_action(browser, portal, host: str, action: str) -> str:
    """As staff in admin: tick `host` in Hosts, run `action`; the message admin answers with."""
    admin = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
    try:
        login(admin, portal)
        admin.goto(f"{portal.url}/admin/console/host/")
        admin.check(f"tr:has(th a:text-is('{host}')) input.action-select")
        admin.select_option("select[name=action]", action)
        admin.click("button[name=index]")
        return admin.inner_text("ul.messagelist")
    finally:
        admin.context.close()


def test_maintenance_moves_the_vm_away_and_its_serial_console_follows(page, browser, portal, hosts):
    from tests.e2e.test_serial_console import start_vm

    start_vm(portal)
    open_serial(page, portal)
    wait_for_shell(page)
    page.evaluate(WATCH_STATUS)
    said = host_action(browser, portal, "local", "maintenance_enter")
    assert "local is in maintenance" in said.lower()
    followed(page, "moved to hv2")
    run(page, "echo maintenance-$((6*7))", "maintenance-42")
    summary = portal.manage(
        "shell",
        "-c",
        "import time; from console.models import HostMaintenance as M\n"
        "for _ in range(100):\n"
        "    m = M.objects.filter(host__name='local').first()\n"
        "    if m.emptied_at: break\n"
        "    time.sleep(0.2)\n"
        "print(m.state, m.summary)",
    )
    assert f"empty [{{'vm': '{portal.vm_name}', 'moved_to': 'hv2'}}]" in summary
    assert "local takes vms again" in host_action(browser, portal, "local", "maintenance_leave").lower()


def test_a_move_that_fails_leaves_the_console_open(page, browser, portal, hosts):
    """A move to a host that does not answer: the VM page says why it stayed, and the console
    open in another tab never closed; keys still reach the guest."""
    portal.manage(
        "shell",
        "-c",
        "from console.models import Host; Host.objects.update_or_create(name='gone', defaults=dict("
        "uri='qemu+ssh://root@10.231.7.200/system', "  # fenced by bin/hv2: fails at once
        f"ssh_key_file='{HV2 / 'id_ed25519'}', migration_address='10.231.7.200'))",
    )
    try:
        start_vm_in_mode(page, portal, "vnc")
        page.click("a.button:text-is('Console')")
        page.wait_for_selector("#status.connected", timeout=20000)
        wait_for_canvas(page, CANVAS["vnc"], lambda s: s["colours"] >= 2 and s["lit"] > 200)
        page.evaluate(WATCH_STATUS)
        admin = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
        try:
            login(admin, portal)
            admin.click(f"text={portal.vm_name}")
            admin.select_option("#migrate-form select", label="gone")
            admin.click("#migrate-form button")
            admin.wait_for_selector("#migration-state >> text=failed; the VM stayed on local", timeout=60000)
        finally:
            admin.context.close()
        assert page.evaluate("window.statuses") == []  # the console never closed
        reader = SerialReader(settings.LIBVIRT_URI, portal.vm_name)
        try:
            reader.wait_for_prompt()
            type_a_marker(page, CANVAS["vnc"], reader, "stayed")
        finally:
            reader.close()
    finally:
        portal.manage(
            "shell", "-c", "from console.models import Host; Host.objects.filter(name='gone').delete()"
        )
