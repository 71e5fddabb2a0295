"""The benchmark's world: a database of its own, a user with a session, a VM whose console
is the backend, and the servers under test, each in its own process on 127.0.0.1."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def daphne_argv(port: int) -> list[str]:
    """Daphne exactly as `make run` starts it (with the portal's backpressure, portal/daphne.py)."""
    return [
        sys.executable,
        "-m",
        "portal.daphne",
        "-b",
        "127.0.0.1",
        "-p",
        str(port),
        "portal.asgi:application",
    ]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port}")


def django_env() -> dict:
    """Settings for the benchmark's own database and secret, shared by every process."""
    tmp = Path(tempfile.mkdtemp(prefix="console-bench-"))
    return {
        "DATABASE_URL": os.environ.get("BENCH_DATABASE_URL") or f"sqlite:///{tmp / 'bench.sqlite3'}",
        "SECRET_KEY": secrets.token_hex(32),
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
        "CONSOLE_PROXY_URL": "",
        "SPICE_PROXY_URL": "",
        "CONSOLE_TICKETS_PER_MINUTE_PER_VM": "0",
        "CONSOLE_TICKETS_PER_MINUTE": "0",
        # The recorded path's recordings (bench-rec), deleted with the world.
        "RECORDINGS_DIR": str(tmp / "recordings"),
    }


@dataclass
class World:
    env: dict
    backend_port: int
    user_id: int
    vm_id: int
    cookie: str
    processes: list
    domain_id: int = 0
    # A second VM on the same console stand-in whose consoles are recorded (console.recording
    # per-vm): the "Daphne, recorded" path, beside "Daphne" in the same process.
    recorded: dict = field(default_factory=dict)
    auth_hash: str = ""
    # The console stand-in's VNC password, which the portal holds for the VM as a rotation
    # would have left it: the portal's proxies authenticate with it, clients of the other
    # paths (raw TCP, stock websockify, the landed portal) with their own copy.
    password: str = field(default_factory=lambda: secrets.token_urlsafe(6))

    def graphics_password(self, vm, domain_id: int | None) -> None:  # noqa: ANN001 - a VirtualMachine
        from django.utils import timezone

        from console.graphics import graphics_password_record

        graphics_password_record(
            vm=vm, domain_id=domain_id, password=self.password, valid_until=timezone.now() + timedelta(days=1)
        )

    def spawn(self, name: str, argv: list[str], port: int, cwd: Path = ROOT) -> subprocess.Popen:
        log = open(Path(tempfile.gettempdir()) / f"console-bench-{name}.log", "w")
        env = {**os.environ, **self.env}
        env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)  # the servers under test run as they ship
        process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=log, stderr=log)
        self.processes.append(process)
        wait_for_port(port, process, name)
        return process

    def ticket_tokens(self, count: int, path, *, max_connections: int = 1, seconds: int = 600) -> list[str]:
        """Tickets for the VM whose console is the backend, made as the portal makes them for
        `path` (its kind of proxy and the page origin that connects)."""
        from django.utils import timezone

        from console.models import ConsoleTicket
        from console.tickets import token_hash

        tokens = [secrets.token_hex(24) for _ in range(count)]
        expires = timezone.now() + timedelta(seconds=seconds)
        target = path.target or {"vm_id": self.vm_id, "port": self.backend_port, "domain_id": self.domain_id}
        ConsoleTicket.objects.bulk_create(
            ConsoleTicket(
                token_hash=token_hash(token),
                user_id=self.user_id,
                vm_id=target["vm_id"],
                kind=path.ticket_kind,
                origin=path.origin,
                auth_hash=self.auth_hash,
                domain_id=target["domain_id"],
                protocol="vnc",
                address="127.0.0.1",
                port=target["port"],
                expires_at=expires,
                max_connections=max_connections,
            )
            for token in tokens
        )
        return tokens

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(self.env["RECORDINGS_DIR"], ignore_errors=True)

    def recorded_bytes(self) -> int:
        """What the recorded path's recordings hold so far."""
        return sum(f.stat().st_size for f in Path(self.env["RECORDINGS_DIR"]).rglob("*") if f.is_file())


def world_create() -> World:
    env = django_env()
    os.environ.update(env)
    # The harness makes tickets with the ORM between awaits: a few ms that count as ticket issue.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "1"
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.test import Client

    from console.models import Host, VirtualMachine

    call_command("migrate", verbosity=0)
    # A benchmark of the proxies, not of the portal's policy: one user holds every session.
    from console.globalconfig import MAX_SESSIONS_PER_USER, config_set

    config_set(key=MAX_SESSIONS_PER_USER, value="0", actor="bench")
    from console.hypervisor import hypervisor_for
    from console.tickets import auth_hash

    user = get_user_model().objects.create_user("bench", password=secrets.token_hex(16))
    # libvirt's test driver with a running domain "bench-vm": tickets are checked against it.
    host = Host.objects.create(name="bench", uri=f"test://{ROOT / 'tests' / 'fixtures' / 'testnode.xml'}")
    vm = VirtualMachine.objects.create(name="bench-vm", owner=user, host=host)
    client = Client()
    client.force_login(user)
    cookie = f"sessionid={client.cookies['sessionid'].value}"
    world = World(env, free_port(), user.pk, vm.pk, cookie, [])
    # world_create runs on the harness's event loop; libvirt calls go to a thread.
    with ThreadPoolExecutor(1) as pool:
        world.domain_id = pool.submit(hypervisor_for(host).domain_id, vm.name).result()
    world.auth_hash = auth_hash(user)
    world.graphics_password(vm, world.domain_id)
    # Recorded consoles, as `console.recording per-vm` records them, with a cap no bulk run reaches.
    from console.globalconfig import RECORDING, RECORDING_MAX_MIB

    config_set(key=RECORDING, value="per-vm", actor="bench")
    config_set(key=RECORDING_MAX_MIB, value="1048576", actor="bench")
    recorded = VirtualMachine.objects.create(name="bench-rec", owner=user, host=host, record_console=True)
    with ThreadPoolExecutor(1) as pool:
        recorded_domain = pool.submit(hypervisor_for(host).domain_id, recorded.name).result()
    world.graphics_password(recorded, recorded_domain)
    world.recorded = {"vm_id": recorded.pk, "port": world.backend_port, "domain_id": recorded_domain}
    world.spawn(
        "backend",
        [sys.executable, "-m", "bench.backend", str(world.backend_port), world.password],
        world.backend_port,
    )
    return world
