"""The project's shape, held by tests: no import cycles inside it, leaves that stay leaves, the
README's table of close codes true to the code, and nothing built committed."""

from __future__ import annotations

import ast
import re
import subprocess
from collections import defaultdict
from pathlib import Path

from console.errors import End

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("console", "portal", "api")


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def _imports(path: Path, modules: dict[str, Path], name: str) -> set[str]:
    """The project modules `path` imports, at any depth of its code, but under TYPE_CHECKING."""
    targets: set[str] = set()

    def add(target: str) -> None:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        if target and target != name:
            targets.add(target)

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            add(node.module)
            for alias in node.names:
                add(f"{node.module}.{alias.name}")
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return targets


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, modules, name) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def connect(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def test_no_import_cycle_inside_the_project():
    assert cycles(import_graph()) == []


def test_the_cycle_check_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_leaves_import_nothing_of_the_project():
    graph = import_graph()
    for leaf in ("console.errors", "console.metrics", "console.proxy.wire"):
        assert graph[leaf] <= {"console.errors"}, leaf
    assert graph["console.errors"] == set()
    assert graph["console.metrics"] == set()


def test_layers_point_one_way():
    graph = import_graph()
    services = {"console.tickets", "console.vms", "console.sessions", "console.shares", "console.graphics"}
    assert not graph["console.models"] & services, "models import no services"
    assert "console.views" not in graph["api.v1"], "the API calls services, never views"
    reverse: dict[str, set[str]] = defaultdict(set)
    for module, targets in graph.items():
        for target in targets:
            reverse[target].add(module)
    assert not {m for m in reverse["console.views"] if m.startswith("console.proxy")}


def test_the_readmes_close_codes_are_the_codes_the_portal_sends():
    readme = (ROOT / "README.md").read_text()
    table = dict(re.findall(r"^\| (\d{4}) \| (.+?) \|$", readme, re.MULTILINE))
    sent = {str(int(end)) for end in End if end is not End.CONNECTION_LOST}
    assert set(table) == sent


def test_nothing_built_is_committed():
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    paths = [p.decode() for p in tracked if p]
    odd = [p for p in paths if re.search(r"[\s\"'\\]", p)]
    assert odd == [], "paths a script's output made?"
    large = [p for p in paths if (ROOT / p).is_file() and (ROOT / p).stat().st_size > 1 << 20]
    assert large == [], "built files belong to set-up"
    built = [p for p in paths if re.search(r"(vmlinuz|initrd|\.img|\.qcow2|\.sqlite3|/bundles/)", p)]
    assert built == []
