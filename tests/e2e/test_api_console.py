"""The API as a script uses it, against the running portal and a real VM: a client driven by the
OpenAPI schema flips kvm.consoleMode, starts the VM, gets a console ticket and a .vv file, and
stops it; the ticket opens the VM's console in Chromium from another origin (an embedding
front end), and from no other."""

import pytest
import requests

from bench.browser import _static_server
from tests.e2e.conftest import ARTIFACTS

pytestmark = [pytest.mark.browser, pytest.mark.hypervisor]

FIRST_MESSAGE = """async (url) => {
  const socket = new WebSocket(url);
  socket.binaryType = "arraybuffer";
  return await new Promise((resolve) => {
    socket.onmessage = (event) => { resolve(new TextDecoder().decode(event.data)); socket.close(); };
    socket.onclose = (event) => resolve(`closed ${event.code}`);
  });
}"""


class SchemaClient:
    """Calls operations by the operationId the schema gives them: nothing hand-wired."""

    def __init__(self, base: str, token: str) -> None:
        self.base = base
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"
        schema = requests.get(f"{base}/api/v1/schema/", timeout=10).json()
        self.operations = {
            operation["operationId"]: (method.upper(), path)
            for path, methods in schema["paths"].items()
            for method, operation in methods.items()
        }

    def call(self, operation_id: str, *, params=None, json=None, **path) -> requests.Response:
        method, template = self.operations[operation_id]
        return self.session.request(
            method, self.base + template.format(**path), params=params, json=json, timeout=60
        )


def test_a_script_drives_a_vm_and_embeds_its_console(portal, browser):
    token = portal.manage(
        "shell",
        "-c",
        "from console.apitokens import api_token_create; from django.contrib.auth.models import User; "
        "print(api_token_create(user=User.objects.get(username='admin'), name='e2e')[1])",
    ).split()[-1]
    api = SchemaClient(portal.url, token)
    vm_id = portal.vm_id()

    assert api.call("api_v1_config_put", key="kvm.consoleMode", json={"value": "vnc"}).status_code == 200
    api.call("api_v1_vm_poweroff", vm_id=vm_id)  # whatever state the other tests left it in
    started = api.call("api_v1_vm_start", vm_id=vm_id)
    assert started.status_code == 200, started.text
    assert (started.json()["state"], started.json()["running_mode"]) == ("running", "vnc")

    server, port = _static_server(ARTIFACTS)
    other_server, other_port = _static_server(ARTIFACTS)
    try:
        embedder = f"http://127.0.0.1:{port}"
        ticket = api.call("api_v1_vm_console_ticket", vm_id=vm_id, params={"origin": embedder})
        assert ticket.status_code == 200, ticket.text
        body = ticket.json()
        assert body["protocol"] == "vnc" and "password" not in body  # the proxy authenticates to the VM
        assert body["websocket_url"].startswith(f"ws://127.0.0.1:{portal.url.rsplit(':', 1)[1]}/ws/console/")

        context = browser.new_context()
        page = context.new_page()
        page.goto(f"http://127.0.0.1:{other_port}/")  # another site with the ticket: refused
        assert page.evaluate(FIRST_MESSAGE, body["websocket_url"]) == "closed 4001"
        page.goto(f"{embedder}/")  # the front end it was issued for, with no portal cookie
        assert page.evaluate(FIRST_MESSAGE, body["websocket_url"]).startswith("RFB 003.")
        context.close()
    finally:
        server.shutdown()
        other_server.shutdown()

    vv = api.call("api_v1_vm_console_vv", vm_id=vm_id)
    assert vv.status_code == 200 and vv.headers["Content-Type"] == "application/x-virt-viewer"
    assert vv.text.startswith("[virt-viewer]") and "type=vnc" in vv.text

    stopped = api.call("api_v1_vm_poweroff", vm_id=vm_id)
    assert stopped.status_code == 200 and stopped.json()["state"] == "shut off"
    again = api.call("api_v1_vm_poweroff", vm_id=vm_id)
    assert again.status_code == 409 and again.json()["error"]["code"] == "vm_state"
