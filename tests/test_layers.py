"""The layers are a contract: shared/ imports neither agent/ nor controller/, agent/ never
imports controller/, and controller/ imports agent/ only where it still does today (each
place listed below, to be moved into shared/: the architecture issue). A new crossing, or a
listed one that is gone (then delete its line), fails this test."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FORBIDDEN = {
    "shared": ("edgefleet.agent", "edgefleet.controller"),
    "agent": ("edgefleet.controller",),
    "controller": ("edgefleet.agent",),
}
# Known crossings, controller -> agent (file, imported module). Shrink, never grow.
KNOWN = {
    ("controller/cards.py", "edgefleet.agent.runtime.detector"),
    # push refuses what the agent's own decoder cannot read: the agent's answer, on purpose
    ("controller/detector_check.py", "edgefleet.agent.runtime.head_check"),
    ("controller/plans.py", "edgefleet.agent.runtime.metadata"),
    ("controller/plans.py", "edgefleet.agent.profile_select"),
    ("controller/sampling.py", "edgefleet.agent.sampler"),
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


def test_no_new_import_crosses_a_layer() -> None:
    new = _crossings() - KNOWN
    assert not new, f"imports across layers (move the shared part into shared/): {sorted(new)}"


def test_the_list_of_known_crossings_is_not_stale() -> None:
    gone = KNOWN - _crossings()
    assert not gone, f"these crossings are gone; delete them from KNOWN: {sorted(gone)}"
