"""The layers are a contract (docs/ARCHITECTURE.md, "Layers"):

- shared/ imports none of the others; the detector runtime (edgefleet/runtime/) imports only
  shared/; agent/ and controller/ import shared/ and the runtime, never each other;
- no import cycle, counting every import: a deferred (function-level) or TYPE_CHECKING
  import that dodges a cycle at import time is still a cycle;
- no private name crosses a module: ``from x import _name``, ``x._name`` on an imported
  module, or a private module (``pkg._mod``) imported from outside its package.

Deferred imports stay allowed where they keep a heavy or optional dependency out of a
module's import, as long as they close no cycle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FORBIDDEN = {
    "shared": ("edgefleet.agent", "edgefleet.controller", "edgefleet.runtime"),
    "edgefleet/runtime": ("edgefleet.agent", "edgefleet.controller"),
    "agent": ("edgefleet.controller",),
    "controller": ("edgefleet.agent",),
}
# source folder -> import name (pyproject's package-dir)
PACKAGES = {
    "shared": "edgefleet.shared",
    "agent": "edgefleet.agent",
    "controller": "edgefleet.controller",
    "edgefleet": "edgefleet",
}


def _modules(root: Path) -> dict[str, Path]:
    """Import name -> file, for every module under the mapped folders of ``root``."""
    out = {}
    for folder, package in PACKAGES.items():
        for path in sorted((root / folder).rglob("*.py")):
            parts = list(path.relative_to(root / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join([package, *parts])] = path
    return out


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _imported(tree: ast.Module) -> Iterator[tuple[str, str | None]]:
    """(module, name imported from it or None) for every absolute import in the file,
    deferred ones inside functions and TYPE_CHECKING blocks included."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((alias.name, None) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield from ((node.module, alias.name) for alias in node.names)


def _targets(tree: ast.Module, known: dict[str, Path]) -> set[str]:
    """The modules of ``known`` this file imports (``from pkg import mod`` names mod)."""
    out = set()
    for module, name in _imported(tree):
        if name is not None and f"{module}.{name}" in known:
            out.add(f"{module}.{name}")
        elif module in known:
            out.add(module)
    return out


def _crossings() -> set[tuple[str, str]]:
    out = set()
    for layer, banned in FORBIDDEN.items():
        for path in sorted((REPO / layer).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            for module, name in _imported(_tree(path)):
                full = module if name is None else f"{module}.{name}"
                if full.startswith(banned):
                    out.add((rel, module))
    return out


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (module -> modules it imports), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def _import_graph(root: Path) -> dict[str, set[str]]:
    known = _modules(root)
    return {name: _targets(_tree(path), known) - {name} for name, path in known.items()}


def _private_uses(name: str, tree: ast.Module) -> list[str]:
    """Private names ``name``'s module takes from other edgefleet modules."""
    out, bound = [], set()
    for module, imported in _imported(tree):
        if not module.startswith("edgefleet"):
            continue
        full = module if imported is None else f"{module}.{imported}"
        parts = full.split(".")
        for i, part in enumerate(parts):
            private = part.startswith("_") and not part.startswith("__")
            # a private module is its package's own; a private name is its module's own
            if private and not name.startswith(".".join(parts[:i]) + "."):
                out.append(f"{name} imports {full}")
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("edgefleet"):
            bound.update(alias.asname or alias.name for alias in node.names)
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in bound
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            out.append(f"{name} uses {node.value.id}.{node.attr} (line {node.lineno})")
    return out


def test_no_import_crosses_a_layer() -> None:
    crossings = _crossings()
    assert not crossings, f"imports across layers (move the shared part down): {sorted(crossings)}"


def test_no_import_cycle_even_through_deferred_imports() -> None:
    cycle = _cycle(_import_graph(REPO))
    assert cycle is None, "import cycle (move what both use into a third module): " + " -> ".join(
        cycle or []
    )


def test_no_private_name_crosses_a_module() -> None:
    found = [
        use for name, path in _modules(REPO).items() for use in _private_uses(name, _tree(path))
    ]
    assert not found, "private names used across modules (make them public or move the code):\n" + (
        "\n".join(found)
    )


def test_the_checks_catch_a_deferred_cycle_and_a_private_import(tmp_path: Path) -> None:
    """The checks above are not vacuous: a cycle closed by a function-level import and a
    ``from x import _name`` in a throwaway tree are both found."""
    pkg = tmp_path / "controller"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from edgefleet.controller.b import _helper\n")
    (pkg / "b.py").write_text("def _helper():\n    from edgefleet.controller import a\n")
    for folder in ("shared", "agent", "edgefleet"):
        (tmp_path / folder).mkdir()
    graph = _import_graph(tmp_path)
    a, b = "edgefleet.controller.a", "edgefleet.controller.b"
    assert _cycle(graph) == [a, b, a]
    uses = _private_uses("edgefleet.controller.a", _tree(pkg / "a.py"))
    assert uses == ["edgefleet.controller.a imports edgefleet.controller.b._helper"]
