"""No import cycles, between packages or between modules, imports made only for type checking included.

Read from the source with ``ast`` (nothing is imported, so a cycle hidden behind a lazy import
inside a function or an ``if TYPE_CHECKING:`` block is found too).  Dependencies point inward:
``gateway`` and ``api`` use ``journey``, ``ivr``, ``routing``, ``recordings``; ``api`` never uses
``gateway`` (the node hands itself over as ``api.node.ApiHost``).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("gateway", "api", "journey", "ivr", "routing", "recordings")

#: Which packages each package may import (besides itself).
ALLOWED = {
    "recordings": set(),
    "routing": set(),
    "ivr": {"routing"},
    "journey": {"ivr", "routing"},
    "api": {"journey", "ivr", "routing", "recordings"},
    "gateway": {"api", "journey", "ivr", "routing", "recordings"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()

    def add(target: str) -> None:
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != name:
            out.add(target)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join([*base, node.module] if node.module else base)
            else:
                mod = node.module or ""
            for alias in node.names:
                full = f"{mod}.{alias.name}"
                add(full if full in known else mod)
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(name, path, known) for name, path in mods.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one member (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
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

    for v in sorted(g):
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_lazy_and_type_checking_imports() -> None:
    g = graph()
    assert "gateway.worker.legs" in g["gateway.worker.session"]
    assert "api.node" in g["gateway.node"]            # imported inside a method
    assert "ivr.check" in g["ivr.loader"]


def test_no_module_imports_itself_back() -> None:
    assert cycles(graph()) == []


def test_packages_depend_inward_only() -> None:
    wrong = defaultdict(set)
    for mod, targets in graph().items():
        src = mod.split(".")[0]
        for t in targets:
            dst = t.split(".")[0]
            if dst != src and dst not in ALLOWED[src]:
                wrong[mod].add(t)
    assert dict(wrong) == {}


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
