"""The browser consoles with the pages pointed at websockify (manage.py consoleproxy)."""

import pytest

from tests.e2e.test_browser_console import console_round_trip

pytestmark = [pytest.mark.browser, pytest.mark.hypervisor]


@pytest.mark.parametrize("mode", ["spice", "vnc"])
def test_console_through_websockify(page, websockify_portal, mode):
    sockets, log = console_round_trip(page, websockify_portal, mode, "consoleproxy.log")
    proxy = websockify_portal.env["CONSOLE_PROXY_URL"]
    assert sockets and all(url.startswith(proxy + "?token=") for url in sockets)
    recorded = websockify_portal.manage(
        "shell",
        "-c",
        "from console.models import ConsoleSession as S; print(S.objects.filter(via='websockify').count())",
    )
    assert int(recorded.strip().splitlines()[-1]) >= 1
    assert "token=[redacted]" in log
