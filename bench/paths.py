"""The paths under test: raw TCP to the backend; stock websockify (the reference); the portal's
own proxies (consoleproxy: websockify running the gate; the console WebSocket on Daphne and on
uvicorn); and the landed version's console WebSocket on Daphne (bench/baseline.py), on the same
database, so the pipeline's cost shows against it in the same run."""

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
    # The VNC password its clients authenticate with themselves; None where the portal's proxy
    # authenticates to the console (and offers its clients the security type None).
    password: str | None = None

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
            "password": self.password,
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


def paths_start(world: World, baseline: str | None = None) -> list[Path]:
    raw = Path("raw TCP", world.backend_port, None, None, password=world.password)
    stock_port = free_port()
    stock = world.spawn(
        "websockify",
        # Stock websockify to the stand-in: the reference every ratio is to ("xws").
        [str(BIN / "websockify"), f"127.0.0.1:{stock_port}", f"127.0.0.1:{world.backend_port}"],
        stock_port,
    )
    ws_port = free_port()
    consoleproxy = world.spawn(
        "consoleproxy",
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
    paths = [
        raw,
        Path("websockify", stock_port, "/", stock, password=world.password),
        # Pages of the portal at `origin` connecting through websockify, as with CONSOLE_PROXY_URL.
        Path(
            "consoleproxy", ws_port, "/?token={token}", consoleproxy, origin=origin, ticket_kind="websockify"
        ),
        Path(
            "Daphne",
            daphne_port,
            f"/ws/console/{world.vm_id}/?token={{token}}",
            daphne,
            origin=origin,
            cookie=world.cookie,
        ),
        # The same Daphne, to a VM whose consoles are recorded: what recording costs.
        Path(
            "Daphne, recorded",
            daphne_port,
            f"/ws/console/{world.recorded['vm_id']}/?token={{token}}",
            daphne,
            origin=origin,
            cookie=world.cookie,
            target=world.recorded,
        ),
        Path(
            "uvicorn",
            uvicorn_port,
            f"/ws/console/{world.vm_id}/?token={{token}}",
            uvicorn,
            origin=f"http://127.0.0.1:{uvicorn_port}",
            cookie=world.cookie,
        ),
    ]
    if baseline:
        from bench.baseline import baseline_path

        paths.append(baseline_path(world, baseline))
    return paths
