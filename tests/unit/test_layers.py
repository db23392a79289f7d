"""The package's layers, as the folders show them: no import cycle between ``pipeline`` modules and
no import from a lower layer to a higher one (imports inside functions count: they run)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "pipeline"
# bottom to top; a module may import its own layer and the ones below it
LAYERS = ("core", "config", "spec", "data", "store", "tracking", ("cli", "reporting"), "stages")


def layer_of(module: str) -> int:
    """The rank of a ``pipeline.x[.y]`` module: its sub-package's layer, top-level modules are
    stages."""
    parts = module.split(".")
    name = parts[1] if len(parts) > 1 else ""
    for rank, layer in enumerate(LAYERS):
        if name in (layer if isinstance(layer, tuple) else (layer,)):
            return rank
    return LAYERS.index("stages")


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def import_graph() -> dict[str, set[str]]:
    """``pipeline`` module -> the ``pipeline`` modules it imports (``from pkg import mod``: ``pkg``,
    whose ``__init__`` runs first, and ``pkg.mod``)."""
    files = {module_name(p): p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts}
    graph: dict[str, set[str]] = {}
    for mod, path in files.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("pipeline")}
            elif (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.startswith("pipeline")
            ):
                found.add(node.module)
                found |= {f"{node.module}.{a.name}" for a in node.names}
        graph[mod] = {m for m in found if m in files and m != mod}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles() -> None:
    assert cycles(import_graph()) == []


def test_no_import_runs_up_a_layer() -> None:
    upward = sorted(f"{a} -> {b}" for a, deps in import_graph().items() for b in deps
                    if layer_of(b) > layer_of(a))
    if upward:
        pytest.fail("imports from a lower layer to a higher "
                    "one:\n  " + "\n  ".join(upward), pytrace=False)


def test_the_checks_can_fail() -> None:
    """The two checks above see a cycle and an upward arrow when there is one."""
    assert cycles({"pipeline.a": {"pipeline.b"}, "pipeline.b": {"pipeline.a"}}) == [
        ["pipeline.a", "pipeline.b"]
    ]
    assert (
        layer_of("pipeline.core.objectives")
        < layer_of("pipeline.store.writer")
        < layer_of("pipeline.train")
    )
    assert layer_of("pipeline.cli.entry") == layer_of("pipeline.reporting.build")
