"""The wheel maps the top-level folders under edgefleet.* and the agent extra stays lean."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parent.parent
MAPPING = {"edgefleet": "edgefleet", "shared": "edgefleet.shared", "agent": "edgefleet.agent",
           "controller": "edgefleet.controller",
           "firmware_profiles": "edgefleet.firmware_profiles"}  # fmt: skip


def _declared_packages() -> set[str]:
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    return set(data["tool"]["setuptools"]["packages"])


def test_every_package_folder_is_declared() -> None:
    found = set()
    for top, name in MAPPING.items():
        for init in (REPO / top).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / top)
            found.add(".".join([name, *rel.parts]))
    assert found == _declared_packages()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "-w", str(out), str(REPO)],
        check=True, capture_output=True,
    )  # fmt: skip
    (whl,) = out.glob("edgefleet-*.whl")
    return whl


@pytest.mark.slow
def test_wheel_installs_no_bare_top_level_modules(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.startswith("edgefleet-")}
    assert tops == {"edgefleet"}
    assert "edgefleet/shared/protocol.py" in names
    assert "edgefleet/agent/daemon.py" in names
    assert "edgefleet/runtime/detector.py" in names
    assert "edgefleet/controller/app.py" in names
    assert "edgefleet/controller/migrations/env.py" in names
    assert "edgefleet/controller/migrations/script.py.mako" in names
    assert "edgefleet/controller/migrations/versions/0001_baseline.py" in names
    assert "edgefleet/mosquitto-dev.conf" in names
    assert "edgefleet/firmware_profiles/jetson-orin-nano-8gb-jp6.yaml" in names


@pytest.mark.slow
def test_agent_extra_installs_without_torch_ultralytics_fastapi(
    wheel: Path, tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run(
        [str(py), "-m", "pip", "install", "-q", f"{wheel}[agent]"], check=True, timeout=600
    )
    probe = (
        "import importlib.util as u, edgefleet.agent.daemon, edgefleet.runtime.detector, "
        "edgefleet.agent.updater, edgefleet.shared.protocol\n"
        "from edgefleet.shared.profiles import shipped_profiles_dir\n"
        "assert (shipped_profiles_dir() / 'cpu-x86_64.yaml').is_file()\n"
        "for bare in ('shared', 'agent', 'controller', 'torch', 'ultralytics', 'fastapi'):\n"
        "    assert u.find_spec(bare) is None, bare\n"
        "print('agent ok')"
    )
    out = subprocess.run([str(py), "-c", probe], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "agent ok" in out.stdout
    cli = subprocess.run(
        [str(venv / "bin" / "edgefleet"), "model", "list"], capture_output=True, text=True
    )
    # The operator CLI needs the controller extra: one clear line, no traceback.
    assert cli.returncode == 1
    assert "controller" in cli.stderr
    assert "Traceback" not in cli.stderr
