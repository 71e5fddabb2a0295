"""The browser consoles with the pages pointed at websockify (manage.py consoleproxy)."""

import pytest

from tests.e2e.conftest import ARTIFACTS
from tests.e2e.test_browser_console import open_console_and_press_escape, start_vm_in_mode

pytestmark = [pytest.mark.browser, pytest.mark.hypervisor]


@pytest.mark.parametrize("mode", ["spice", "vnc"])
def test_console_through_websockify(page, websockify_portal, mode):
    sockets = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    start_vm_in_mode(page, websockify_portal, mode)
    open_console_and_press_escape(page, websockify_portal, mode)
    proxy = websockify_portal.env["CONSOLE_PROXY_URL"]
    assert sockets and all(url.startswith(proxy + "?token=") for url in sockets)
    recorded = websockify_portal.manage(
        "shell",
        "-c",
        "from console.models import ConsoleSession as S; print(S.objects.filter(via='websockify').count())",
    )
    assert int(recorded.strip().splitlines()[-1]) >= 1
    tokens = {url.split("token=")[1] for url in sockets}
    log = (ARTIFACTS / "consoleproxy.log").read_text()
    assert "token=[redacted]" in log and not any(token in log for token in tokens)
