"""The tooling in pyproject.toml holds: ruff (lint + format) everywhere, mypy strict on the
whole ``edgefleet`` package (shared/, agent/, controller/, edgefleet/) and on bench/."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parent.parent


def _tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        pytest.skip(f"{name} is not installed (pip install -e '.[dev]')")
    return found


@pytest.mark.parametrize(
    "args", [["check", "."], ["format", "--check", "."]], ids=["lint", "format"]
)
def test_ruff(args: list[str]) -> None:
    out = subprocess.run([_tool("ruff"), *args], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]


def _package_tree() -> Path:
    """The ``edgefleet`` import tree as the install lays it out (pyproject's package-dir).

    The repository's folders are mapped into one namespace (shared/ -> edgefleet.shared, ...)
    and the editable install does that with an import hook mypy cannot follow: checked file
    by file, every ``from edgefleet.shared ...`` would resolve to nothing and type as Any.
    A tree of links under .mypy_cache (a stable path, so mypy's cache stays warm) gives
    mypy the real package.
    """
    package_dir = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-dir"
    ]
    root = REPO / ".mypy_cache" / "package-tree"
    pkg = root / "edgefleet"
    pkg.mkdir(parents=True, exist_ok=True)
    own = REPO / package_dir["edgefleet"]  # edgefleet/: its modules and edgefleet/runtime
    links = {f.name: f for f in own.iterdir() if f.suffix in {".py", ".typed"}}
    links |= {d.name: d for d in own.iterdir() if (d / "__init__.py").is_file()}
    links |= {name.split(".", 1)[1]: REPO / folder for name, folder in package_dir.items()
              if name != "edgefleet"}  # fmt: skip
    for name, target in links.items():
        link = pkg / name
        if link.is_symlink() and link.resolve() == target.resolve():
            continue
        link.unlink(missing_ok=True)
        link.symlink_to(target, target_is_directory=target.is_dir())
    for stale in pkg.iterdir():
        if stale.name not in links:
            stale.unlink()
    return root


@pytest.mark.slow
def test_mypy_strict_on_the_whole_package() -> None:
    tree = _package_tree()  # where pyproject's mypy_path points
    out = subprocess.run([_tool("mypy")], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-4000:]
    # every module of the package was read from the tree, none left out
    modules = sum(len(list(link.resolve().rglob("*.py"))) if link.is_dir() else link.suffix == ".py"
                  for link in (tree / "edgefleet").iterdir())  # fmt: skip
    assert f"no issues found in {modules} source files" in out.stdout, out.stdout


@pytest.mark.slow
def test_mypy_strict_on_bench() -> None:
    _package_tree()  # bench/ imports the package
    out = subprocess.run(
        [_tool("mypy"), "bench"], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stdout[-4000:]
