"""The house rule, enforced: imports only go down, and no two modules import each other.

Walks every import of the shipped packages with `ast` (module-level, function-level and `TYPE_CHECKING`
ones alike) and fails on an import loop, on the core importing a plug-in package, and on a wing of
bridge/ importing a wing above it. See docs/architecture.md.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("bridge", "device_adapters", "skills", "simulator")
PLUG_INS = ("simulator", "skills", "device_adapters")
# bridge/'s wings, bottom first: a wing may import its own modules and any wing on a lower rank.
WING_RANK = {
    "infra": 0,
    "core": 1,
    "store": 2,
    "devices": 3,
    "alerts": 4,
    "ingress": 5,
    "delivery": 5,
    "app": 6,
}


def module_files() -> dict[str, Path]:
    mods: dict[str, Path] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            mods[name] = path
    return mods


def imported_names(module: str, path: Path) -> Iterator[str]:
    """Every dotted name the module imports, relative imports resolved."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                parent = ".".join([*base, *([node.module] if node.module else [])])
            else:
                parent = node.module or ""
            for alias in node.names:
                yield f"{parent}.{alias.name}"


def import_graph() -> dict[str, set[str]]:
    mods = module_files()

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, path in mods.items():
        targets = {resolve(name) for name in imported_names(module, path)}
        graph[module] = {t for t in targets if t is not None and t != module}
    return graph


def loops(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
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


def wing(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "bridge" and len(parts) > 1 and parts[1] in WING_RANK else None


def test_there_is_no_import_loop() -> None:
    assert loops(import_graph()) == []


def test_the_core_never_imports_a_plug_in() -> None:
    graph = import_graph()
    bad = sorted(
        f"{m} -> {t}" for m, targets in graph.items() if m.startswith("bridge") for t in targets
        if t.split(".")[0] in PLUG_INS
    )
    assert bad == []


def test_imports_only_go_down_the_wings() -> None:
    graph = import_graph()
    bad = []
    for module, targets in graph.items():
        own = wing(module)
        if own is None:
            continue
        for target in targets:
            other = wing(target)
            if other is not None and other != own and WING_RANK[other] >= WING_RANK[own]:
                bad.append(f"{module} ({own}) -> {target} ({other})")
    assert sorted(bad) == []


def test_bridge_keeps_a_short_top_level() -> None:
    top = [p.name for p in (ROOT / "bridge").glob("*.py")]
    assert len(top) <= 12, top
    assert sorted(p.name for p in (ROOT / "bridge").iterdir() if p.is_dir() and not p.name.startswith("__")) == sorted(
        WING_RANK
    )


def test_the_checker_sees_a_loop_and_a_lazy_import(tmp_path: Path) -> None:
    """The walker itself: a function-level import closing a loop is found."""
    graph = {"a": {"b"}, "b": {"a"}, "c": {"a"}}
    assert loops(graph) == [["a", "b"]]
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from bridge.app import cli\n", encoding="utf-8")
    assert list(imported_names("x.m", src)) == ["bridge.app.cli"]
