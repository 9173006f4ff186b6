"""The package's shape: no import cycles, private names used only where they live.

Every import of a kdisco module counts, at module level, inside functions and under
``if TYPE_CHECKING:`` alike: a cycle that only the type checker sees is still two
modules that cannot be understood (or moved) one without the other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "kdisco"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def resolve(module: str, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    package = module.split(".")
    is_package = MODULES[module].name == "__init__.py"
    base = package if is_package else package[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def imports(module: str) -> list[tuple[str, tuple[str, ...]]]:
    """(imported kdisco module, names taken from it) for every import in ``module``."""
    tree = ast.parse(MODULES[module].read_text())
    found: list[tuple[str, tuple[str, ...]]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, ()) for a in node.names if a.name.startswith("kdisco")]
        elif isinstance(node, ast.ImportFrom):
            target = resolve(module, node)
            if not target.startswith("kdisco"):
                continue
            names = tuple(a.name for a in node.names)
            # ``from kdisco._strategies import base`` imports a module, not a name.
            submodules = tuple(n for n in names if f"{target}.{n}" in MODULES)
            found += [(f"{target}.{n}", ()) for n in submodules]
            rest = tuple(n for n in names if n not in submodules)
            if rest:
                found.append((target, rest))
    return found


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for module in MODULES:
        targets = {t for t, _ in imports(module) if t in MODULES and t != module}
        # Importing a.b.c runs a/__init__ and a/b/__init__ first.
        for t in list(targets):
            parts = t.split(".")
            targets |= {".".join(parts[:i]) for i in range(2, len(parts))}
        edges[module] = targets - {module} - {"kdisco"}
    return edges


def test_the_walk_sees_the_package() -> None:
    assert {"kdisco._discoverer", "kdisco._k8s.client", "kdisco._strategies.api"} <= set(MODULES)
    assert "kdisco._settings" in graph()["kdisco._discoverer"]


def test_no_import_cycles() -> None:
    edges = graph()
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert cycles == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_private_names_are_not_imported_across_modules(module: str) -> None:
    # A name with a leading underscore is its module's own business. (Modules are
    # private by their own names; importing a private *module* is how the package is
    # put together.)
    taken = [
        (target, name)
        for target, names in imports(module)
        for name in names
        if name.startswith("_") and not name.startswith("__")
    ]
    assert taken == []


def test_the_core_does_not_import_the_kubernetes_client_at_module_level() -> None:
    # Only kdisco._k8s reads kubeconfigs through the kubernetes package, and only
    # when credentials are loaded (see test_imports.py for what a process loads).
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text())
        names: list[str] = []
        for node in tree.body:
            if isinstance(node, ast.Import):
                names += [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names.append(node.module or "")
        assert not [n for n in names if n.startswith("kubernetes")], module
