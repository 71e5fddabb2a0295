"""Shared viewing in Chromium, on the real guest: the owner shares a VNC console with another
user, who watches read-only — their keys never reach the guest, the owner's do — and the owner
sees them watching and ends it."""

import secrets

import pytest
from django.conf import settings

from bench.browser import wait_until
from tests.e2e.conftest import PASSWORD, login, wait_for_canvas
from tests.e2e.test_browser_console import CANVAS, start_vm_in_mode, type_a_marker, type_keys
from tests.helpers import SerialReader

pytestmark = [pytest.mark.browser, pytest.mark.hypervisor]


def test_a_watcher_sees_the_console_and_cannot_type_into_it(browser, page, portal):
    portal.manage(
        "shell",
        "-c",
        "from django.contrib.auth.models import User; "
        "u, _ = User.objects.get_or_create(username='watcher'); "
        f"u.set_password('{PASSWORD}'); u.save()",
    )
    start_vm_in_mode(page, portal, "vnc")  # the owner (admin), on the VM's page
    page.fill("#share-form input[name=username]", "watcher")
    page.click("#share-form button")
    assert "watcher may now watch" in page.inner_text(".messages")

    context = browser.new_context()
    viewer = context.new_page()
    reader = None
    try:
        login(viewer, portal, "watcher")
        viewer.click(f"#shared-consoles a:text-is('{portal.vm_name}')")
        viewer.wait_for_selector("#status.connected", timeout=20000)
        assert viewer.is_visible(".view-only") and not viewer.is_visible("#type-text")
        wait_for_canvas(viewer, CANVAS["vnc"], lambda s: s["colours"] >= 2 and s["lit"] > 200)

        page.reload()
        assert "watcher (viewer) — connected now" in page.inner_text("#shares")

        reader = SerialReader(settings.LIBVIRT_URI, portal.vm_name)
        reader.wait_for_prompt()
        viewer.click(CANVAS["vnc"])
        marker = f"viewer-{secrets.token_hex(4)}"
        type_keys(viewer, f"echo {marker} > /dev/ttyS0\n")

        page.click("a.button:text-is('Console')")  # the owner, at the same console
        page.wait_for_selector("#status.connected", timeout=20000)
        page.click(CANVAS["vnc"])
        owner_marker = f"owner-{secrets.token_hex(4)}"
        for _ in range(3):
            type_keys(page, f"echo {owner_marker} > /dev/ttyS0\n")
            try:
                reader.wait_for(owner_marker.encode(), timeout=10)
                break
            except AssertionError:
                continue
        reader.wait_for(owner_marker.encode(), timeout=1)
        assert marker.encode() not in reader.output  # the watcher's keys never arrived

        page.goto(f"{portal.url}/vms/{portal.vm_id()}/")
        page.click("#shares button:has-text('Stop sharing')")
        wait_until(viewer, "document.querySelector('#status').textContent.includes('stopped sharing')", 10)
    finally:
        if reader is not None:
            reader.close()
        context.close()


def test_watching_a_spice_console_shows_the_screen_without_its_inputs_channel(page, portal):
    """SPICE has no read-only mode in QEMU: a watcher's page gets every channel but the
    keyboard and mouse one, which the proxy refuses (4024)."""
    start_vm_in_mode(page, portal, "spice")
    page.goto(f"{portal.url}/vms/{portal.vm_id()}/console/?view_only=1")
    page.wait_for_selector("#status.connected", timeout=20000)
    assert page.is_visible(".view-only")
    wait_for_canvas(page, CANVAS["spice"], lambda s: s["colours"] >= 2 and s["lit"] > 200)
    refused = portal.manage(
        "shell",
        "-c",
        "from console.models import ConsoleSession as S; "
        "print(S.objects.filter(end_reason__startswith='this console is view-only').count())",
    )
    assert int(refused.split()[-1]) >= 1


def test_control_is_requested_given_and_taken_back_between_two_people_on_a_vnc_console(browser, page, portal):
    """An operator the owner shared the console with watches it, asks for control, and gets it
    when the owner accepts: their keys reach the guest and the owner's do not, until the owner
    takes it back."""
    portal.manage(
        "shell",
        "-c",
        "from django.contrib.auth.models import User; from console.models import VirtualMachine as V; "
        "from console.shares import console_share_create; "
        "u, _ = User.objects.get_or_create(username='helper'); "
        f"u.set_password('{PASSWORD}'); u.save(); vm = V.objects.get(name='{portal.vm_name}'); "
        "vm.shares.filter(viewer=u, ended_at=None).exists() or "
        "console_share_create(vm=vm, username='helper', by=vm.owner, role='operator')",
    )
    start_vm_in_mode(page, portal, "vnc")
    page.click("a.button:text-is('Console')")  # the owner, with input
    page.wait_for_selector("#status.connected", timeout=20000)
    context = browser.new_context()
    helper = context.new_page()
    reader = SerialReader(settings.LIBVIRT_URI, portal.vm_name)
    try:
        login(helper, portal, "helper")
        helper.goto(f"{portal.url}/vms/{portal.vm_id()}/console/?view_only=1")
        helper.wait_for_selector("#status.connected", timeout=20000)
        reader.wait_for_prompt()
        type_a_marker(page, CANVAS["vnc"], reader, "owner")  # the control: the owner types
        assert helper.is_visible("#view-only-badge")
        helper.click("#control-request")
        helper.wait_for_selector("#control-note:has-text('waiting for an answer')", timeout=10000)

        page.wait_for_selector("#control-requests:has-text('helper asks for control')", timeout=10000)
        page.click("#control-requests button:text-is('Give control')")
        page.wait_for_selector("#control-note:has-text('You gave control to helper')", timeout=10000)
        helper.wait_for_selector("#control-note:has-text('gave you control')", timeout=10000)
        assert not helper.is_visible("#view-only-badge") and page.is_visible("#view-only-badge")
        type_a_marker(helper, CANVAS["vnc"], reader, "helper")  # the helper's keys arrive now
        page.click(CANVAS["vnc"])
        owner_marker = f"handed-{secrets.token_hex(4)}"
        type_keys(page, f"echo {owner_marker} > /dev/ttyS0\n")

        page.click("#control-end:text-is('Take back control')")
        helper.wait_for_selector("#view-only-badge", state="visible", timeout=10000)
        page.wait_for_selector("#view-only-badge", state="hidden", timeout=10000)
        type_a_marker(page, CANVAS["vnc"], reader, "owner-again")
        helper.click(CANVAS["vnc"])
        helper_marker = f"taken-{secrets.token_hex(4)}"
        type_keys(helper, f"echo {helper_marker} > /dev/ttyS0\n")
        type_a_marker(page, CANVAS["vnc"], reader, "owner-last")  # after the helper's keys
        assert owner_marker.encode() not in reader.output  # typed while the helper had control
        assert helper_marker.encode() not in reader.output  # typed after the owner took it back
    finally:
        reader.close()
        context.close()
