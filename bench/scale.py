"""make bench ARGS=--scale: what many hosts and several workers cost, measured side by side.

- A console through an SSH tunnel (to a console stand-in on the second host, bin/hv2) against
  the same console stand-in reached directly, both through the portal's consumer on Daphne:
  set-up (ticket + handshake + first byte), bulk throughput, 64-byte round trip.
- Live migration to hv2 with a console open in Chromium (VNC, SPICE, serial): the move's time,
  the guest's downtime and the console's gap (bench/migration.py).
- One worker and two workers behind HAProxy (bin/cluster, on PostgreSQL and Redis): 1 Mbit/s
  sessions carried with round-trip p99 under 50 ms, and the round trip beside 100 streaming
  sessions; and HAProxy's own round trip (the same worker asked directly and through HAProxy).
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import psycopg

from bench import figures
from bench.paths import Path, paths_start
from bench.setup import ROOT, World, free_port, world_create

HV2 = ROOT / "var" / "hv2"
POSTGRES = "postgres://postgres@127.0.0.1:5432"


def _in_thread(fn, *args, **kwargs):
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(fn, *args, **kwargs).result()


def _tunnel_target(world: World) -> tuple[dict, subprocess.Popen]:
    """A console stand-in on hv2's loopback, and a running VM there for tickets to name."""
    from console.hypervisor import hypervisor_for
    from console.models import Host, VirtualMachine
    from console.vms import vm_start

    subprocess.run([str(ROOT / "bin" / "hv2"), "up"], check=True, capture_output=True)
    port = 17000 + secrets.randbelow(2000)
    backend = subprocess.Popen(
        # hv2-exec starts in hv2's namespaces with a clean environment (and not in this folder).
        [
            str(HV2 / "hv2-exec"),
            "sh",
            "-c",
            f'cd "{ROOT}" && exec "{sys.executable}" -m bench.backend {port} {world.password}',
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    probe = f"exec 3<>/dev/tcp/127.0.0.1/{port}"
    for _ in range(100):  # the stand-in listens on hv2's loopback, seen from inside hv2
        if subprocess.run([str(HV2 / "hv2-exec"), "bash", "-c", probe], capture_output=True).returncode == 0:
            break
        time.sleep(0.1)
    host = Host.objects.create(
        name="bench-hv2",
        uri="qemu+ssh://root@10.231.7.2/system",
        ssh_key_file=str(HV2 / "id_ed25519"),
        ssh_host_key=(HV2 / "ssh_host_ed25519_key.pub").read_text(),
    )
    vm = VirtualMachine.objects.create(
        name=f"bench-{uuid.uuid4().hex[:6]}", owner_id=world.user_id, host=host
    )
    _in_thread(vm_start, vm=vm, user=vm.owner)
    domain_id = _in_thread(hypervisor_for(host).domain_id, vm.name)
    # The proxy authenticates to the stand-in (not to the VM's QEMU) with the password the
    # portal holds for the VM: make it the stand-in's.
    world.graphics_password(vm, domain_id)
    return {"vm_id": vm.pk, "port": port, "domain_id": domain_id, "vm": vm}, backend


async def tunnel_vs_direct(world: World, paths: list[Path], repeats: int) -> dict:
    daphne = next(p for p in paths if p.name == "Daphne")
    target, backend = _tunnel_target(world)
    try:
        tunnel = Path(
            "Daphne, SSH tunnel to hv2",
            daphne.port,
            daphne.ws_path.replace(f"/{world.vm_id}/", f"/{target['vm_id']}/"),
            daphne.process,
            origin=daphne.origin,
            cookie=daphne.cookie,
            target=target,
            password=None,
        )
        results: dict[str, dict[str, list]] = {}
        for _ in range(repeats):
            for path in (daphne, tunnel):
                row = results.setdefault(path.name, {})
                for result in (
                    await figures.setup_time(path, world, 50),
                    await figures.bulk(path, world, 2.0),
                    await figures.echo(path, world, 1000),
                ):
                    for key, value in result.items():
                        if value is not None:
                            row.setdefault(key, []).append(value)
        return results
    finally:
        backend.terminate()
        from console.hypervisor import hypervisor_for

        vm = target["vm"]
        _in_thread(hypervisor_for(vm.host).destroy, vm.name)
        _in_thread(hypervisor_for(vm.host).undefine, vm.name)


def first_frames_remote(world: World, paths: list[Path], repeats: int) -> dict:
    """Page -> first drawn frame in Chromium for a VM on this host and one on hv2 (through the
    SSH tunnel), SPICE and VNC, through the portal on Daphne."""
    from django.conf import settings
    from playwright.sync_api import sync_playwright

    from bench.browser import CHROMIUM, CHROMIUM_ARGS, _consoles_closed, _new_context, _time_to_first_frame
    from console.hypervisor import hypervisor_for
    from console.models import Host, VirtualMachine
    from console.vms import vm_start

    daphne = next(p for p in paths if p.name == "Daphne")
    local, _ = Host.objects.get_or_create(uri=settings.LIBVIRT_URI, defaults={"name": "local"})
    remote = Host.objects.get(name="bench-hv2")
    vms = {
        (where, mode): VirtualMachine.objects.create(
            name=f"bench-ff-{where}-{mode}-{uuid.uuid4().hex[:4]}",
            owner_id=world.user_id,
            host=host,
            console_mode=mode,
            boot_menu=True,
        )
        for where, host in (("local", local), ("hv2", remote))
        for mode in ("spice", "vnc")
    }
    results: dict[str, list[float]] = {}
    try:
        for vm in vms.values():
            _in_thread(vm_start, vm=vm, user=vm.owner)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            context = _new_context(browser, world.cookie)
            for _ in range(repeats):
                for (where, mode), vm in vms.items():
                    url = f"http://127.0.0.1:{daphne.port}/vms/{vm.id}/console/"
                    results.setdefault(f"ttff_{mode}_{where}_ms", []).append(
                        _time_to_first_frame(context, url)
                    )
                    _consoles_closed(vm)  # QEMU keeps one SPICE client: the next page's must not wait
            browser.close()
    finally:
        for vm in vms.values():
            for call in (hypervisor_for(vm.host).destroy, hypervisor_for(vm.host).undefine):
                try:
                    _in_thread(call, vm.name)
                except Exception:  # noqa: BLE001 - best effort clean-up
                    pass
    return results


def _two_ports() -> int:
    while True:
        base = free_port()
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", base + 1))
                return base
            except OSError:
                continue


async def workers(world: World, counts: list[int], ladder: list[int], samples: int) -> dict:
    results: dict[str, dict] = {}
    for count in counts:
        port = free_port()
        base = _two_ports()
        env = {
            **os.environ,
            **world.env,
            "CLUSTER_DIR": tempfile.mkdtemp(prefix="console-bench-cluster-"),
            "PORT": str(port),
            "WORKER_BASE_PORT": str(base),
            "SPICE_PROXY_PORT": str(free_port()),
            "CONSOLE_PROXY_PORT": str(free_port()),
            "DATABASE_URL": world.env["DATABASE_URL"],
            "REDIS_URL": "redis://127.0.0.1:6379/7",
            # The "direct" figure asks a worker by its own address, from the page's origin.
            "CSRF_TRUSTED_ORIGINS": f"http://127.0.0.1:{port}",
        }
        env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        subprocess.run(
            [str(ROOT / "bin" / "cluster"), "up", str(count)], env=env, check=True, capture_output=True
        )
        try:
            ws_path = f"/ws/console/{world.vm_id}/?token={{token}}"
            origin = f"http://127.0.0.1:{port}"
            via = Path(
                f"{count} worker(s) via HAProxy", port, ws_path, None, origin=origin, cookie=world.cookie
            )
            row = results.setdefault(via.name, {})
            row.update(await figures.echo(via, world, samples))
            row.update(await figures.echo_under_load(via, world, samples, 100))
            row.update(await figures.max_sessions(via, world, ladder, samples))
            if count == 1:
                direct = Path("1 worker, direct", base, ws_path, None, origin=origin, cookie=world.cookie)
                results[direct.name] = await figures.echo(direct, world, samples)
        finally:
            subprocess.run([str(ROOT / "bin" / "cluster"), "down"], env=env, capture_output=True)
    return results


async def scale(short: bool) -> dict:
    database = f"console_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    os.environ["BENCH_DATABASE_URL"] = f"{POSTGRES}/{database}"
    world = world_create()
    try:
        paths = paths_start(world)
        tunnel = await tunnel_vs_direct(world, paths, 1 if short else 3)
        import asyncio

        frames = await asyncio.to_thread(first_frames_remote, world, paths, 1 if short else 5)
        from bench.migration import migration_gaps

        daphne = next(p for p in paths if p.name == "Daphne")
        moves = await asyncio.to_thread(migration_gaps, world, daphne.port)
        ladder = [5, 10] if short else [100, 200, 400, 700, 1000]
        cluster = await workers(world, [1, 2], ladder, 100 if short else 500)
        return {"tunnel": tunnel, "frames": frames, "migration": moves, "workers": cluster}
    finally:
        world.stop()
        from django.db import connections

        connections.close_all()
        with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def scale_table(result: dict) -> str:
    import statistics

    lines = ["SSH tunnel vs direct, both through the portal's consumer on Daphne (medians):"]
    keys = [
        ("setup_p50_ms", "set-up p50, ms"),
        ("bulk_gbit_s", "bulk, Gbit/s"),
        ("rtt_p50_ms", "RTT p50, ms"),
        ("rtt_p99_ms", "RTT p99, ms"),
    ]
    names = list(result["tunnel"])
    lines.append(f"{'':28}" + "".join(f"{n:>30}" for n in names))
    for key, label in keys:
        values = [statistics.median(result["tunnel"][n][key]) for n in names]
        ratio = f" ({values[1] / values[0]:.2f}x)" if values[0] else ""
        lines.append(f"{label:28}" + "".join(f"{v:>30.3f}" for v in values) + ratio)
    lines.append("Browser, page -> first frame through the portal on Daphne (median ms):")
    for key, values in result.get("frames", {}).items():
        lines.append(f"  {key:28} {statistics.median(values):8.0f}  ({min(values):.0f}-{max(values):.0f})")
    from bench.migration import migration_table

    lines.extend(migration_table(result.get("migration", {})))
    lines.append("Workers behind HAProxy (on PostgreSQL and Redis):")
    for name, row in result["workers"].items():
        parts = [f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()]
        lines.append(f"  {name:28} " + ", ".join(parts))
    w1 = result["workers"].get("1 worker(s) via HAProxy", {})
    w2 = result["workers"].get("2 worker(s) via HAProxy", {})
    direct = result["workers"].get("1 worker, direct", {})
    if w1.get("max_sessions") and w2.get("max_sessions") is not None:
        lines.append(
            f"  2 workers hold {w2['max_sessions'] / w1['max_sessions']:.2f}x the 1 Mbit/s sessions of 1"
        )
    if direct and w1:
        lines.append(f"  HAProxy adds {w1['rtt_p50_ms'] - direct['rtt_p50_ms']:.3f} ms to the round trip p50")
    return "\n".join(lines)
