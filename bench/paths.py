"""The paths under test: raw TCP to the backend, websockify, and the portal's Channels consumer."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import psutil

from bench.setup import BIN, World, daphne_argv, free_port
from bench.wsclient import Conn, open_conn


@dataclass
class Path:
    name: str
    port: int
    ws_path: str | None  # with {token}; None for raw TCP
    process: object | None  # the proxy's root process
    origin: str = ""
    cookie: str = ""
    ticket_kind: str = "browser"
    # Where its tickets lead, when not to the world's VM and backend (a VM on another host).
    target: dict | None = None

    async def connect(self, token: str | None = None) -> Conn:
        path = None if self.ws_path is None else self.ws_path.format(token=token)
        return await open_conn("127.0.0.1", self.port, path=path, origin=self.origin, cookie=self.cookie)

    def load_config(self, tokens: list[str]) -> dict:
        return {
            "port": self.port,
            "ws_path": self.ws_path,
            "origin": self.origin,
            "cookie": self.cookie,
            "tokens": tokens,
        }

    def _tree(self) -> list[psutil.Process]:
        root = psutil.Process(self.process.pid)
        return [root, *root.children(recursive=True)]

    def cpu_seconds(self) -> float:
        """CPU time of the proxy and every process it forked that is still alive."""
        total = 0.0
        for proc in self._tree():
            try:
                times = proc.cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                pass
        return total

    def rss(self) -> int:
        """Resident memory of the proxy's processes."""
        total = 0
        for proc in self._tree():
            try:
                total += proc.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total

    def memory(self) -> int:
        """Proportional set size of the proxy's processes: shared pages counted once."""
        total = 0
        for proc in self._tree():
            try:
                total += proc.memory_full_info().pss
            except psutil.NoSuchProcess:
                pass
        return total


def paths_start(world: World) -> list[Path]:
    raw = Path("raw TCP", world.backend_port, None, None)
    ws_port = free_port()
    websockify = world.spawn(
        "websockify",
        [sys.executable, "manage.py", "consoleproxy", "--listen", f"127.0.0.1:{ws_port}"],
        ws_port,
    )
    daphne_port = free_port()
    daphne = world.spawn(
        "daphne",
        # Exactly as `make run` serves the portal.
        daphne_argv(daphne_port),
        daphne_port,
    )
    origin = f"http://127.0.0.1:{daphne_port}"
    uvicorn_port = free_port()
    uvicorn = world.spawn(
        "uvicorn",
        # Exactly as `make run SERVER=uvicorn` serves the portal.
        [str(BIN / "uvicorn"), "--host", "127.0.0.1", "--port", str(uvicorn_port), "portal.asgi:application"],
        uvicorn_port,
    )
    return [
        raw,
        # Pages of the portal at `origin` connecting through websockify, as with CONSOLE_PROXY_URL.
        Path("websockify", ws_port, "/?token={token}", websockify, origin=origin, ticket_kind="websockify"),
        Path(
            "Channels on Daphne",
            daphne_port,
            f"/ws/console/{world.vm_id}/?token={{token}}",
            daphne,
            origin=origin,
            cookie=world.cookie,
        ),
        Path(
            "Channels on uvicorn",
            uvicorn_port,
            f"/ws/console/{world.vm_id}/?token={{token}}",
            uvicorn,
            origin=f"http://127.0.0.1:{uvicorn_port}",
            cookie=world.cookie,
        ),
    ]
