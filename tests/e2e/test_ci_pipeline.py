"""deploy/ci/ as CI runs it, end to end: the gate set up once (gate-setup.sh), then
pipeline.sh pushes the shipped v2 (the "trained" model: training with Ultralytics takes
minutes, so MODEL_FILE skips that step) and starts a canary that a real agent installs;
then pipeline.sh with a v2 that never detects triangles is refused by the gate with the
reason, exit 3, and no rollout. Real controller, broker, agent and CLI processes."""

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
