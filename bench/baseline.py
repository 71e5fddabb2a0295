"""The landed version of the portal, measured beside this one in the same run.

`make bench ARGS=--baseline REV` (default: the version before the console pipeline) unpacks
REV's tree with `git archive` into var/bench/baseline-REV (nothing registered in the
repository) and serves its console WebSocket with Daphne, as its `make run` did, on the
benchmark's own database: this version's migrations only add to the schema, so the landed
code reads and writes the same tickets and sessions. The landed proxy relays bytes as they
come and leaves authentication to its client, so its clients authenticate to the console
stand-in themselves, as its pages did.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path as FilePath

from bench.paths import Path
from bench.setup import ROOT, World, free_port

LANDED = "f4a1e46"  # the last landed version before the one console pipeline (issue 19)


def baseline_tree(rev: str) -> FilePath:
    """REV's tree, unpacked once."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", f"{rev}^{{commit}}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    tree = ROOT / "var" / "bench" / f"baseline-{commit}"
    if not (tree / "manage.py").exists():
        tree.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", commit], cwd=ROOT, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


def _static(tree: FilePath) -> None:
    """What the landed version's set-up made for its pages: the clients (the same pinned
    versions: linked), its bundles (esbuild), its static files under hashed names."""
    if (tree / "var" / "static" / "staticfiles.json").exists():
        return
    for client in ("novnc", "spice-html5", "xterm"):
        link = tree / "static" / client
        if not link.exists():
            link.symlink_to(ROOT / "static" / client)
    pages = sorted(str(p) for p in (tree / "static" / "console").glob("*-console.js"))
    subprocess.run(
        [str(ROOT / "node_modules" / ".bin" / "esbuild"), *pages, "--bundle", "--minify", "--format=esm"]
        + ["--target=es2022", f"--outdir={tree / 'static' / 'bundles'}", "--log-level=warning"],
        check=True,
    )
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"],
        cwd=tree,
        env={
            **os.environ,
            "STATIC_ROOT": str(tree / "var" / "static"),
            "DJANGO_SETTINGS_MODULE": "portal.settings",
        },
        check=True,
    )


def baseline_path(world: World, rev: str) -> Path:
    tree = baseline_tree(rev)
    _static(tree)
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "portal.daphne",
        "-b",
        "127.0.0.1",
        "-p",
        str(port),
        "portal.asgi:application",
    ]
    process = world.spawn(f"daphne-{tree.name}", argv, port, cwd=tree)
    return Path(
        f"Daphne, landed {tree.name.removeprefix('baseline-')}",
        port,
        f"/ws/console/{world.vm_id}/?token={{token}}",
        process,
        origin=f"http://127.0.0.1:{port}",
        cookie=world.cookie,
        password=world.password,
    )
