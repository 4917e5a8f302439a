"""deploy/ci/ as CI runs it, end to end: the gate set up once (gate-setup.sh), then
pipeline.sh pushes the shipped v2 (a well-trained model: training one takes minutes, so
MODEL_FILE skips that step) and starts a canary that a real agent installs; then
pipeline.sh with a v2 that never detects triangles is refused by the gate with the
reason, exit 3, and no rollout. The train step itself runs too, short (one epoch), and
the gate refuses what it makes. Real controller, broker, agent and CLI processes."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import REPO, System, wait_for

pytestmark = [pytest.mark.broker, pytest.mark.slow]

CI = REPO / "deploy" / "ci"
V2 = REPO / "models" / "shapes" / "v2" / "model.onnx"


def _module(path: Path) -> object:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _script(system: System, name: str, **env: str) -> subprocess.CompletedProcess[str]:
    venv_bin = str(Path(sys.executable).parent)
    full = {**system.env(), **env, "PATH": f"{venv_bin}:{os.environ['PATH']}"}
    return subprocess.run(["bash", str(CI / name)], capture_output=True, text=True, env=full,
                          timeout=300, check=False)  # fmt: skip


def test_pipeline_canaries_a_good_model_and_the_gate_refuses_a_worse_one(
    system: System, tmp_path: Path
) -> None:
    _module(REPO / "models/make_dataset.py").generate(tmp_path / "shapes", 0, 60, seed=5)  # type: ignore[attr-defined]
    blind = _module(REPO / "models/make_bad.py").make_blind(V2, tmp_path / "blind.onnx", 2)  # type: ignore[attr-defined]
    system.start_agent("ci-cam", {"site": "ci"})
    wait_for("the agent to register", lambda: system.device("ci-cam"))

    setup = _script(system, "gate-setup.sh", VAL_DIR=str(tmp_path / "shapes/images/val"),
                    LATENCY_BUDGET_MS="2000")  # fmt: skip
    assert setup.returncode == 0, setup.stderr
    good = _script(system, "pipeline.sh", MODEL_FILE=str(V2), VERSION="v2", SELECTOR="site=ci",
                   STAGES="1")  # fmt: skip
    assert good.returncode == 0, good.stdout + good.stderr
    assert "validation gate: ACCEPTED" in good.stdout and "rollout 1: shapes:v2" in good.stdout
    wait_for("ci-cam to run v2", lambda: (d := system.device("ci-cam")) and d["version"] == "v2"
             and d["phase"] == "COMMITTED", timeout=180)  # fmt: skip

    worse = _script(system, "pipeline.sh", MODEL_FILE=str(blind), VERSION="v3",
                    SELECTOR="site=ci", STAGES="1")  # fmt: skip
    assert worse.returncode == 3, worse.stdout + worse.stderr
    assert "REJECTED on dataset shapes-val against production v2" in worse.stdout
    assert "REJECTED: class 'triangle' AP50 0.000" in worse.stdout
    assert "the validation gate rejected it: no rollout" in worse.stdout
    rollouts = system.http.get("/v1/rollouts").json()["data"]
    assert [r["version"] for r in rollouts] == ["v2"]


@pytest.mark.export
def test_pipeline_trains_with_ultralytics_and_the_gate_refuses_an_undertrained_model(
    system: System, tmp_path: Path
) -> None:
    """The train step for real: `yolo detect train` (one epoch at 64 px on 16 images, from
    scratch, offline), the run's best.pt pushed with its run dir, judged on the registered
    set and refused for its mAP50, exit 3, with the run's arguments in the lineage."""
    gen = _module(REPO / "models/make_dataset.py").generate  # type: ignore[attr-defined]
    data_yaml = gen(tmp_path / "shapes", 16, 60, seed=7)
    setup = _script(system, "gate-setup.sh", VAL_DIR=str(tmp_path / "shapes/images/val"),
                    LATENCY_BUDGET_MS="2000")  # fmt: skip
    assert setup.returncode == 0, setup.stderr
    run = _script(system, "pipeline.sh", DATA_YAML=str(data_yaml), EPOCHS="1", IMGSZ="64",
                  RUN_ROOT=str(tmp_path / "runs"), VERSION="v1", SELECTOR="site=ci")  # fmt: skip
    assert run.returncode == 3, run.stdout + run.stderr
    assert "== train yolo26n.yaml on" in run.stdout
    assert (tmp_path / "runs/run/weights/best.pt").is_file()
    assert "REJECTED: mAP50" in run.stdout and "minimum 0.300" in run.stdout
    lineage = system.http.get("/v1/models/shapes/versions/v1/lineage").json()["lineage"]
    assert lineage["run"]["args"]["epochs"] == 1 and lineage["run"]["args"]["imgsz"] == 64
    assert system.http.get("/v1/rollouts").json()["data"] == []
