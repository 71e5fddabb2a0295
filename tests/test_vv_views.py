"""The .vv download on the real libvirtd."""

import configparser
import xml.etree.ElementTree as ET

import pytest
from django.test import Client
from django.urls import reverse

from console.hypervisor import hypervisor_for
from console.models import ConsolePreference, ConsoleSession, ConsoleTicket
from console.vms import vm_start

pytestmark = [pytest.mark.django_db, pytest.mark.hypervisor]


def vv_of(response):
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str
    parser.read_string(response.content.decode())
    return parser["virt-viewer"]


@pytest.mark.parametrize("mode", ["spice", "vnc"])
def test_download_for_a_running_vm(client, make_vm, user, mode, settings):
    settings.SPICE_PROXY_URL = ""
    vm = make_vm(console_mode=mode)
    vm_start(vm=vm, user=user)
    client.force_login(user)
    response = client.post(reverse("console:vm-console-vv", args=[vm.id]))
    assert response.status_code == 200
    assert response["Content-Type"] == "application/x-virt-viewer"
    assert response["Content-Disposition"] == f'attachment; filename="{vm.name}.vv"'
    assert "no-store" in response["Cache-Control"]
    vv = vv_of(response)
    graphics = ET.fromstring(hypervisor_for(vm.host.uri).xml(vm.name, secure=True)).find("devices/graphics")
    assert vv["type"] == mode and vv["host"] == "127.0.0.1" and vv["port"] == graphics.get("port")
    assert vv["password"] == graphics.get("passwd") and vv["title"] == vm.name
    assert vv["delete-this-file"] == "1"
    ticket = ConsoleTicket.objects.get()
    assert ticket.kind == "vv"
    assert 118 <= (ticket.expires_at - ticket.created_at).total_seconds() <= 121  # VV_PASSWORD_SECONDS
    session = ConsoleSession.objects.get()
    assert (session.via, session.user, session.vm, session.end_reason) == ("vv", user, vm, "downloaded")


def test_through_the_spice_proxy_the_ticket_is_the_host(client, make_vm, user, settings):
    settings.SPICE_PROXY_URL = "http://127.0.0.1:3128"
    vm = make_vm(console_mode="spice")
    vm_start(vm=vm, user=user)
    client.force_login(user)
    vv = vv_of(client.post(reverse("console:vm-console-vv", args=[vm.id])))
    assert vv["proxy"] == "http://127.0.0.1:3128"
    assert len(vv["host"]) == 48 and ConsoleTicket.objects.get().token_hash != vv["host"]


def test_fullscreen_preference_is_remembered(client, make_vm, user):
    vm = make_vm()
    vm_start(vm=vm, user=user)
    client.force_login(user)
    url = reverse("console:vm-console-vv", args=[vm.id])
    assert vv_of(client.post(url, {"preferences": "1", "fullscreen": "1"}))["fullscreen"] == "1"
    assert ConsolePreference.objects.get(user=user).vv_fullscreen
    assert vv_of(client.post(url))["fullscreen"] == "1"
    assert vv_of(client.post(url, {"preferences": "1"}))["fullscreen"] == "0"


def test_stopped_vm_gets_a_message(client, make_vm, user):
    vm = make_vm()
    client.force_login(user)
    page = client.post(reverse("console:vm-console-vv", args=[vm.id]), follow=True).content.decode()
    assert "start it to open its console" in page
    assert not ConsoleTicket.objects.exists()


def test_non_owner_gets_404_and_get_is_refused(make_vm, user, other_user):
    vm = make_vm()
    vm_start(vm=vm, user=user)
    client = Client()  # no CSRF check in the way: the access check alone answers
    client.force_login(other_user)
    assert client.post(reverse("console:vm-console-vv", args=[vm.id])).status_code == 404
    forged = Client(enforce_csrf_checks=True)  # even the owner's POST needs the page's CSRF token
    forged.force_login(user)
    assert forged.post(reverse("console:vm-console-vv", args=[vm.id])).status_code == 403
    client.force_login(user)
    assert client.get(reverse("console:vm-console-vv", args=[vm.id])).status_code == 405
    assert not ConsoleTicket.objects.exists()
