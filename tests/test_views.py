import pytest
from django.test import Client
from django.urls import reverse

from console.models import Host, VirtualMachine, VmEvent

pytestmark = pytest.mark.django_db


@pytest.fixture
def test_host():
    return Host.objects.create(name="fake", uri="test:///default")


@pytest.fixture
def vm(test_host, user):
    return VirtualMachine.objects.create(name="alices-vm", owner=user, host=test_host)


def action_url(vm, action):
    return reverse("console:vm-action", args=[vm.id, action])


def test_login_required(client, vm):
    response = client.get(reverse("console:vm-list"))
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    assert client.get("/accounts/login/").status_code == 200


def test_owner_sees_their_vm_with_its_state(client, user, vm):
    client.force_login(user)
    page = client.get(reverse("console:vm-list")).content.decode()
    assert "alices-vm" in page and "missing" in page  # not defined on the fake host
    detail = client.get(vm.get_absolute_url())
    assert detail.status_code == 200 and "starts with VNC" in detail.content.decode()


def test_another_users_vm_is_404_everywhere(client, other_user, vm):
    client.force_login(other_user)
    assert "alices-vm" not in client.get(reverse("console:vm-list")).content.decode()
    assert client.get(vm.get_absolute_url()).status_code == 404
    for action in ("start", "shutdown", "poweroff", "reboot"):
        assert client.post(action_url(vm, action)).status_code == 404
    assert not VmEvent.objects.exists()


def test_staff_see_every_vm(client, staff_user, vm):
    client.force_login(staff_user)
    assert "alices-vm" in client.get(reverse("console:vm-list")).content.decode()
    assert client.get(vm.get_absolute_url()).status_code == 200


def test_actions_need_post_and_csrf(user, vm):
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    assert client.get(action_url(vm, "start")).status_code == 405
    assert client.post(action_url(vm, "start")).status_code == 403
    assert not VmEvent.objects.exists()


def test_unknown_action_is_404(client, user, vm):
    client.force_login(user)
    assert client.post(f"/vms/{vm.id}/explode/").status_code == 404


def test_stopping_a_vm_that_is_not_running_says_so(client, user, vm):
    client.force_login(user)
    page = client.post(action_url(vm, "poweroff"), follow=True).content.decode()
    assert "alices-vm is not running." in page


def test_unreachable_hypervisor_is_a_503_naming_the_host(client, user, staff_user):
    host = Host.objects.create(name="far-away", uri="qemu+unix:///system?socket=/nonexistent/sock")
    vm = VirtualMachine.objects.create(name="remote-vm", owner=user, host=host)
    client.force_login(staff_user)
    page = client.get(vm.get_absolute_url()).content.decode()
    assert "far-away" in page and "/nonexistent/sock" in page  # staff see libvirt's words
    client.force_login(user)
    for response in (client.get(vm.get_absolute_url()), client.post(action_url(vm, "start"))):
        assert response.status_code == 503
        page = response.content.decode()
        # The user learns which host and what to do, never libvirt's words (they can quote files).
        assert "far-away" in page and "tell an administrator" in page
        assert "/nonexistent/sock" not in page and "qemu+unix" not in page
        assert response["Retry-After"]
    listing = client.get(reverse("console:vm-list"))  # what it can serve, with the banner: 200
    assert listing.status_code == 200
    assert "far-away" in listing.content.decode() and "remote-vm" in listing.content.decode()
    assert VirtualMachine.objects.get(pk=vm.pk).started_mode == ""


def _tickets_just_issued(user, vm, count):
    from tests.helpers import make_ticket

    for _ in range(count):
        make_ticket(user, vm, 5900)


@pytest.mark.parametrize("what", ["ticket", "vv"])
def test_tickets_are_rate_limited_per_user_and_vm_with_a_time_to_retry(client, user, settings, what):
    from tests.helpers import TEST_NODE_URI

    settings.CONSOLE_TICKETS_PER_MINUTE_PER_VM = 3
    host = Host.objects.create(name="node", uri=TEST_NODE_URI)
    vm = VirtualMachine.objects.create(name="vm-a", owner=user, host=host)
    _tickets_just_issued(user, vm, 3)
    client.force_login(user)
    url = reverse("console:vm-console-ticket" if what == "ticket" else "console:vm-console-vv", args=[vm.id])
    response = client.post(url)
    assert response.status_code == 429
    assert 1 <= int(response["Retry-After"]) <= 61
    assert "Too many consoles opened for vm-a in the last minute (3 allowed)" in response.content.decode()


def test_tickets_per_user_are_rate_limited_across_vms(client, user, settings):
    from tests.helpers import TEST_NODE_URI

    settings.CONSOLE_TICKETS_PER_MINUTE = 4
    host = Host.objects.create(name="node", uri=TEST_NODE_URI)
    vm_a = VirtualMachine.objects.create(name="vm-a", owner=user, host=host)
    vm_b = VirtualMachine.objects.create(name="vm-b", owner=user, host=host)
    _tickets_just_issued(user, vm_a, 2)
    _tickets_just_issued(user, vm_b, 2)
    client.force_login(user)
    response = client.post(reverse("console:vm-console-ticket", args=[vm_a.id]))
    assert response.status_code == 429 and "in all" in response.json()["error"]
    assert response.json()["retryAfter"] == int(response["Retry-After"])


@pytest.mark.parametrize(
    "uri",
    [
        "qemu:///system",
        "qemu:///session",
        "qemu+ssh://root@10.0.0.2/system",
        "qemu+libssh://portal@hv2.example.org:2222/system",
        "qemu+tls://hv3.example.org/system",
    ],
)
def test_host_uris_of_qemu_over_standard_transports_are_accepted(uri):
    from console.models import validate_libvirt_uri

    validate_libvirt_uri(uri)


@pytest.mark.parametrize(
    "uri",
    [
        "test:///default",
        "xen:///system",
        "lxc:///",
        "qemu+ext:///system?command=/bin/sh",
        "qemu+ssh://root@host/system?command=/tmp/x",
        "qemu+unix:///system?socket=/etc/shadow",
        "qemu+tcp://host/system",
        "qemu:///system?socket=/tmp/x",
        "qemu+ssh:///system",
        "qemu://host/system",
        "qemu:///other",
    ],
)
def test_other_drivers_transports_and_parameters_are_refused(uri):
    from django.core.exceptions import ValidationError

    from console.models import validate_libvirt_uri

    with pytest.raises(ValidationError, match="not a supported libvirt URI"):
        validate_libvirt_uri(uri)


@pytest.mark.parametrize("address", ["0.0.0.0", "::", "::ffff:0.0.0.0", "0:0::0", "0::ffff:0.0.0.0"])  # noqa: S104
def test_every_spelling_of_all_interfaces_needs_the_hosts_consent(address):
    from django.core.exceptions import ValidationError

    host = Host(name="h", uri="qemu:///system", console_listen_address=address)
    with pytest.raises(ValidationError, match="every interface"):
        host.clean()
    host.listen_on_all_interfaces = True
    host.clean()


def test_the_sqlite_database_is_private(tmp_path):
    import os
    import stat

    from portal.settings import private_sqlite_file

    path = tmp_path / "db.sqlite3"
    private_sqlite_file(str(path))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    path.chmod(0o644)
    (tmp_path / "db.sqlite3-wal").write_text("")
    (tmp_path / "db.sqlite3-wal").chmod(0o644)
    private_sqlite_file(str(path))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "db.sqlite3-wal").st_mode) == 0o600


def test_healthz_answers_without_login(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.content == b"ok\n"


@pytest.mark.parametrize(
    "env, missing",
    [
        ({"PORTAL_WORKERS": "2"}, "DATABASE_URL=postgres"),
        ({"PORTAL_WORKERS": "2", "DATABASE_URL": "postgres://postgres@127.0.0.1/x"}, "REDIS_URL=redis"),
    ],
)
def test_several_workers_refuse_what_only_one_process_can_share(env, missing):
    import os
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "portal.settings", "REDIS_URL": "", **env},
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0 and missing in result.stderr


def test_the_vm_list_costs_the_same_queries_for_many_vms(client, user):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from console.models import Host, VirtualMachine
    from tests.helpers import TEST_NODE_URI

    host = Host.objects.create(name="fake-many", uri=TEST_NODE_URI)
    client.force_login(user)
    counts = []
    for name in ("vm-a", "vm-b", "bench-vm", "gone-1", "gone-2"):
        VirtualMachine.objects.create(name=name, owner=user, host=host)
        with CaptureQueriesContext(connection) as queries:
            assert client.get("/").status_code == 200
        counts.append(len(queries))
    assert len(set(counts)) == 1, counts  # no query per VM


def test_type_text_from_the_console_page(client, test_host, user, other_user):
    """The console page's "Type text" (typed by the portal through libvirt): in the layout the
    user picks, which becomes their default for VMs that name none; refusals say why; only
    those who may use the VM; a form post with the CSRF token."""
    from console.automation import vm_layout
    from console.models import ConsolePreference

    vm = VirtualMachine.objects.create(name="test", owner=user, host=test_host)  # the test driver's
    url = reverse("console:vm-type", args=[vm.id])
    client.force_login(user)
    typed = client.post(url, {"text": "ça", "layout": "fr", "enter": "1"})
    assert typed.json() == {"typed": 3, "keystrokes": 3, "layout": "fr"}
    assert ConsolePreference.objects.get(user=user).keyboard_layout == "fr"
    assert vm_layout(vm, user) == "fr"  # what the console page's layout menu picks
    refused = client.post(url, {"text": "ß", "layout": "us"})
    assert refused.status_code == 422 and "cannot type 'ß'" in refused.json()["error"]
    client.force_login(other_user)
    assert client.post(url, {"text": "reboot", "enter": "1"}).status_code == 404
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(user)
    assert strict.post(url, {"text": "x"}).status_code == 403
    # The Keys menu: a combination by name.
    client.force_login(user)
    keys = reverse("console:vm-keys", args=[vm.id])
    assert client.post(keys, {"keys": "ctrl+alt+f2"}).json() == {"pressed": 1}
    unknown = client.post(keys, {"keys": "ctrl+hyper"})
    assert unknown.status_code == 422 and "hyper" in unknown.json()["error"]
    assert VmEvent.objects.filter(vm=vm, action="keys", detail="ctrl+alt+f2").exists()


def test_the_vm_list_searches_filters_sorts_and_pages(client, test_host, user, django_assert_max_num_queries):
    """Hundreds of VMs: 50 a page, a search, filters by host, state and console mode, sorting;
    the page's queries do not grow with the VM count (one libvirt call per host)."""
    other = Host.objects.create(name="other", uri="test:///default?other")
    VirtualMachine.objects.bulk_create(
        [
            VirtualMachine(name=f"vm-{n:03d}", owner=user, host=(other, test_host)[n % 2], console_mode="vnc")
            for n in range(120)
        ]
        + [VirtualMachine(name="test", owner=user, host=test_host, description="the running one")]
    )
    client.force_login(user)
    with django_assert_max_num_queries(12):
        first = client.get("/").content.decode()
    assert "121 VMs, page 1 of 3" in first and 'rel="next"' in first and ">test</a>" in first
    assert "vm-048" in first and "vm-049" not in first
    last = client.get("/?page=3").content.decode()
    assert "page 3 of 3" in last and "vm-119" in last and "vm-098" not in last
    found = client.get("/?q=running+one").content.decode()
    assert "1 VM" in found and ">test</a>" in found
    assert "61 VMs" in client.get("/?host=fake").content.decode()
    running = client.get("/?state=running").content.decode()
    assert "1 VM" in running and ">test</a>" in running
    assert "No VM matches" in client.get("/?q=nothing-like-it").content.decode()
    backwards = client.get("/?sort=-name").content.decode()
    assert backwards.index("vm-119") < backwards.index("vm-118")
    assert "120 VMs" in client.get("/?mode=vnc").content.decode()
    assert client.get("/?page=x&sort=evil").status_code == 200  # bad values fall back
