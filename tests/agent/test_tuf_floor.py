"""The tuf floor in pyproject.toml is real: the updater tests pass on exactly that release.

A throwaway venv gets the floor's tuf from the package index pip is configured with (the
local one here). Nothing else is installed: the other packages come from this venv, seen
through a ``.pth`` that puts its site-packages after the throwaway venv's own, so the
floor's tuf shadows this venv's. Then the updater's tests run there. A floor release
the index lacks is a skip that says so.
"""

from __future__ import annotations

import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

# The agent's tests also run on Python 3.10 (JetPack 6), which has no tomllib: skip there.
tomllib = pytest.importorskip("tomllib", reason="reads pyproject.toml with tomllib (3.11+)")

REPO = Path(__file__).resolve().parents[2]
TESTS = ["tests/agent/test_updater.py", "tests/agent/test_adversarial_tuf.py"]


def _tuf_floors() -> set[str]:
    """The ``tuf>=X`` lower bound of every requirement list that names tuf."""
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    project = data["project"]
    lists = [project.get("dependencies", []), *project.get("optional-dependencies", {}).values()]
    floors = set()
    for requirement in (r for reqs in lists for r in reqs):
        match = re.fullmatch(r"tuf\s*>=\s*([0-9.]+)\s*(,.*)?", requirement)
        if match:
            floors.add(match.group(1))
        else:
            assert not re.match(r"tuf\b", requirement), f"tuf without a >= floor: {requirement}"
    return floors


def test_every_tuf_requirement_has_the_same_floor() -> None:
    assert len(_tuf_floors()) == 1


@pytest.mark.slow
def test_updater_tests_pass_on_the_tuf_floor(tmp_path: Path) -> None:
    (floor,) = _tuf_floors()
    wheels = tmp_path / "wheels"
    got = subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(wheels),
         f"tuf=={floor}"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if got.returncode != 0:
        why = (got.stderr.strip().splitlines() or ["pip download failed"])[-1]
        pytest.skip(f"the package index has no tuf=={floor} ({why})")

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    own = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    ours = sysconfig.get_paths()["purelib"]
    # addsitedir also runs this venv's .pth files (the editable install of edgefleet)
    (Path(own) / "zz_edgefleet.pth").write_text(f"import site; site.addsitedir({ours!r})\n")
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-index", "--find-links", str(wheels),
         "--no-deps", "--ignore-installed", f"tuf=={floor}"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr

    version = subprocess.run(
        [str(python), "-c", "import tuf; print(tuf.__version__, tuf.__file__)"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert version[0] == floor and version[1].startswith(own)

    run = subprocess.run(
        [str(python), "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *TESTS],
        cwd=REPO, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert re.search(r"\d+ passed", run.stdout)
