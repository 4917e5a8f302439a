"""The layers are a contract: shared/ imports none of the others; the detector runtime
(edgefleet/runtime/) imports only shared/; agent/ and controller/ import shared/ and the
runtime, never each other. A crossing fails this test."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FORBIDDEN = {
    "shared": ("edgefleet.agent", "edgefleet.controller", "edgefleet.runtime"),
    "edgefleet/runtime": ("edgefleet.agent", "edgefleet.controller"),
    "agent": ("edgefleet.controller",),
    "controller": ("edgefleet.agent",),
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):  # deferred imports inside functions count too
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _crossings() -> set[tuple[str, str]]:
    out = set()
    for layer, banned in FORBIDDEN.items():
        for path in sorted((REPO / layer).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            out.update((rel, mod) for mod in _imports(path) if mod.startswith(banned))
    return out


def test_no_import_crosses_a_layer() -> None:
    crossings = _crossings()
    assert not crossings, f"imports across layers (move the shared part down): {sorted(crossings)}"
