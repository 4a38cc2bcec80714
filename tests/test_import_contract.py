"""The import contract, read from the source with `ast` (nothing is imported):

- layers in one direction, client -> gateway -> server: `client/` imports only itself and the
  generated stubs (`taskhub`), `gateway/` also `client/`, `server/` anything;
- no function-local import of a project module (they hide cycles), except the lazy imports in
  LAZY, each with its reason;
- no private name (`_x`) imported from another project module;
- no import cycle between project modules.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

from conftest import REPO

LAYERS = ("client", "gateway", "server")  # each may import the ones before it
PROJECT = {*LAYERS, "taskhub"}            # taskhub: the generated stubs, importable by all
ALLOWED = {layer: {"taskhub", *LAYERS[:i + 1]} for i, layer in enumerate(LAYERS)}

# (module, imported module) -> why it is imported inside a function. Keep this short.
LAZY = {
    # The `taskhub` command loads only the side a verb runs: `taskhub task get 1` must not pay the
    # seconds of CPU that importing the server (SQLite, aiohttp, the engine) costs.
    ("server.cli", "server.app"): "serve only",
    ("server.cli", "server.security"): "serve only",
    ("server.cli", "gateway.app"): "gateway only",
    ("server.cli", "server.node.agent"): "the agent only",
    ("server.storage", "server.storage.postgres"): "psycopg loads only for a postgresql:// --db",
    ("server.cluster", "server.storage.postgres"): "psycopg loads only when several servers share a PostgreSQL database",
    ("server.store_cli", "server.db_target"): "store stats only",
    ("server.store_cli", "server.storage"): "store stats only",
}


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(node: ast.AST, module: str, is_package: bool) -> list[tuple[str, list[str]]]:
    """[(absolute module, [names imported from it])] of one import statement."""
    if isinstance(node, ast.Import):
        return [(a.name, []) for a in node.names]
    base = module.split(".") if is_package else module.split(".")[:-1]
    if node.level:
        base = base[:len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    names = [a.name for a in node.names]
    if node.module is None:  # `from . import x`: x may be a module
        return [(f"{target}.{n}", []) for n in names]
    return [(target, names)]


def scan(root: Path) -> tuple[list[str], dict[str, set[str]]]:
    """(violations, module-level import graph between project modules) of the tree at `root`."""
    problems: list[str] = []
    graph: dict[str, set[str]] = {}
    modules = {module_name(root, p): p for layer in LAYERS for p in (root / layer).rglob("*.py")}
    for module, path in sorted(modules.items()):
        layer = module.split(".")[0]
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        graph[module] = set()
        local_nodes = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                       for n in ast.walk(f)}
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            where = f"{path.relative_to(root)}:{node.lineno}"
            for target, names in imported(node, module, path.name == "__init__.py"):
                top = target.split(".")[0]
                if top not in PROJECT:
                    continue
                if top not in ALLOWED[layer]:
                    problems.append(f"{where}: {layer}/ may not import {target} (allowed: "
                                    f"{', '.join(sorted(ALLOWED[layer]))})")
                if id(node) in local_nodes:
                    if (module, target) not in LAZY:
                        problems.append(f"{where}: function-local import of {target}; import it at the top"
                                        " (a cycle it hides must be cut), or list it in LAZY with the reason")
                    continue
                private = [n for n in names if n.startswith("_") and not n.startswith("__")]
                if private and target != module:
                    problems.append(f"{where}: imports private {', '.join(private)} from {target}")
                # A module, or the module a name comes from (names that are submodules count as such).
                graph[module] |= {f"{target}.{n}" if f"{target}.{n}" in modules else target for n in names} or {target}
    for module in graph:
        graph[module] = {t for t in graph[module] if t in modules and t != module}
    return problems, graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
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
            visit(v)
    return found


def test_the_tree_keeps_the_import_contract():
    problems, graph = scan(REPO)
    problems += [f"import cycle: {' -> '.join(c)}" for c in cycles(graph)]
    assert not problems, "\n".join(problems)


def test_the_contract_catches_each_kind_of_violation(tmp_path):
    def write(rel: str, text: str) -> None:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    for layer in LAYERS:
        write(f"{layer}/__init__.py", "")
    write("client/up.py", "from server import app\n")
    write("client/hidden.py", "def f():\n    from . import up\n")
    write("gateway/peek.py", "from client.up import _secret\n")
    write("gateway/a.py", "from . import b\n")
    write("gateway/b.py", "from .a import x\n")
    write("server/fine.py", "from client import up\nfrom gateway import a\nimport json\n\ndef f():\n    import os\n")
    problems, graph = scan(tmp_path)
    text = "\n".join(problems)
    assert "client/up.py:1: client/ may not import server" in text
    assert "client/hidden.py:2: function-local import of client.up" in text
    assert "gateway/peek.py:1: imports private _secret from client.up" in text
    assert "server/fine.py" not in text
    assert cycles(graph) == [["gateway.a", "gateway.b"]]


def test_nothing_spawns_server_verbs_through_the_client_command():
    """`python -m client.cli` has only the client's verbs: serve, gateway, the agent and store are
    `python -m server.cli` (the `taskhub` command)."""
    pattern = re.compile(r"""["']client\.cli["'],\s*["'](serve|gateway|store|node["'],\s*["']--server)""")
    offenders = [f"{p.relative_to(REPO)}:{text[:m.start()].count(chr(10)) + 1}"
                 for root in ("tests", "bench") for p in (REPO / root).rglob("*.py")
                 for text in [p.read_text(encoding="utf-8")] for m in pattern.finditer(text)]
    assert not offenders, f"use server.cli for these: {offenders}"
