"""Security headers on every response, and the static files the portal serves (and does not)."""

import pytest
from asgiref.testing import ApplicationCommunicator

from portal.asgi import application
from portal.static import static_path_allowed

pytestmark = pytest.mark.django_db(transaction=True)


async def get(path: str, query: bytes = b"") -> tuple[int, dict[bytes, bytes], bytes]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1:8000")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    comm = ApplicationCommunicator(application, scope)
    await comm.send_input({"type": "http.request", "body": b""})
    start = await comm.receive_output(10)
    body = b""
    while True:
        message = await comm.receive_output(10)
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    return start["status"], {name.lower(): value for name, value in start["headers"]}, body


@pytest.mark.parametrize(
    "path",
    [
        "/accounts/login/",  # a page
        "/static/console/console-page.js",  # a static file
        "/static/no-such-file.js",  # a static 404
        "/no-such-page/",  # a page 404
        "/ws/console/1/",  # the WebSocket endpoint asked for over HTTP
    ],
)
async def test_every_response_carries_the_security_headers(path):
    _, headers, _ = await get(path)
    csp = headers[b"content-security-policy"].decode()
    assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp.split("style-src-attr")[0]
    assert "frame-ancestors 'none'" in csp and "object-src 'none'" in csp
    assert headers[b"x-frame-options"] == b"DENY"
    assert headers[b"x-content-type-options"] == b"nosniff"
    assert headers[b"referrer-policy"] == b"same-origin"


@pytest.mark.parametrize(
    "path",
    [
        "/static/spice-html5/spice_auto.html",  # the demo page that wrote URL parameters as HTML
        "/static/spice-html5/spice.html",
        "/static/.clients.stamp",
        "/static/novnc/.hidden.js",
        "/static/novnc/package.json",
        "/static/spice-html5/thirdparty/browser-es-module-loader/dist/browser-es-module-loader.js.map",
        "/static/staticfiles.json",  # collectstatic's manifest
        "/static/.stamp",
    ],
)
async def test_only_what_the_pages_load_is_served(path):
    status, _, _ = await get(path)
    assert status == 404


async def test_the_console_clients_are_served():
    for path in ("/static/spice-html5/main.js", "/static/novnc/core/rfb.js", "/static/console/console.css"):
        status, headers, body = await get(path)
        assert status == 200 and body, path


@pytest.mark.parametrize(
    "name", ["bundles/vnc-console.js", "bundles/spice-console.js", "console/console.css"]
)
async def test_hashed_static_names_are_immutable_and_plain_ones_revalidated(name):
    """bin/setup collected the files under hashed names: the name a page uses changes with the
    content, so the browser may keep it for a year without asking again."""
    from django.templatetags.static import static

    hashed = static(name)
    assert hashed != f"/static/{name}" and hashed.startswith(f"/static/{name.rsplit('.', 1)[0]}.")
    status, headers, body = await get(hashed)
    assert status == 200 and body
    assert headers[b"cache-control"] == b"public, max-age=31536000, immutable"
    status, headers, plain = await get(f"/static/{name}")
    assert status == 200 and plain == body
    assert headers[b"cache-control"] == b"no-cache" and headers[b"etag"]


def test_static_path_rules():
    assert static_path_allowed("console/console-page.js")
    assert not static_path_allowed("console/.git/config")
    assert not static_path_allowed("spice-html5/spice_auto.html")
    assert not static_path_allowed("")


def test_console_pages_have_no_inline_script_or_style(client, user, settings):
    from pathlib import Path

    templates = Path(settings.BASE_DIR) / "templates"
    for template in templates.rglob("*.html"):
        text = template.read_text()
        assert "<style" not in text, template
        for line in text.splitlines():
            if "<script" in line:
                assert "src=" in line, f"{template}: inline script"


@pytest.mark.django_db
def test_readyz_checks_database_layer_and_hosts_in_detail_for_staff(client, django_user_model):
    from console.models import Host
    from tests.helpers import TEST_NODE_URI

    Host.objects.create(name="fake", uri=TEST_NODE_URI)
    body = client.get("/readyz").json()
    assert body["ready"] and body["database"] == "ok" and body["channel_layer"] == "ok"
    assert body["hosts"]["up"] >= 1 and "host_detail" not in body  # no host names for anyone
    staff = django_user_model.objects.create_user("ops", password="x-pw-123456", is_staff=True)
    client.force_login(staff)
    detail = client.get("/readyz").json()["host_detail"]
    assert detail["fake"]["up"] and detail["fake"]["detail"].startswith("libvirt ")
