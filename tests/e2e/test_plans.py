"""End to end: a prebuilt TensorRT plan reaches the device it was built for, and only it.

A real controller, a private Mosquitto and two real agent processes. One agent says it is a
Jetson Orin Nano (the test hook ``fingerprint``, tests/hooked_agent.py: this machine has
no GPU); the other is what it is, a CPU box. The controller gives the Orin the signed plan
and the CPU box the ONNX. The Orin downloads the plan through TUF, verifies it and stores
it with the model info its target carries; it cannot load it here (no TensorRT), so the
install fails with that reason and the Orin keeps serving its old model, which is exactly
what a real Orin does with a bad plan.
What a GPU machine adds (the plan really running) is tests/agent/test_engine_cache.py's
``gpu`` test.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import REPO, System, wait_for

pytestmark = [pytest.mark.broker, pytest.mark.slow]

V1 = REPO / "models" / "shapes" / "v1" / "model.onnx"
V2 = REPO / "models" / "shapes" / "v2" / "model.onnx"
ORIN = {"platform": "jetson", "arch": "aarch64", "tensorrt": "8.6.2",
        "compute_capability": "8.7"}  # fmt: skip
PLAN_TARGET = "models/shapes/v2/plan-sm87-trt8.6.2-fp16.plan"


def _state(system: System, device_id: str, version: str, phase: str) -> dict[str, Any] | None:
    d = system.device(device_id)
    return d if d and d["online"] and d["version"] == version and d["phase"] == phase else None


def _diagnose(system: System) -> str:
    return "\n".join(f"--- {n}\n{system.procs.log(n)[-3000:]}" for n in system.procs.running)


def _roll_out(system: System, version: str) -> None:
    out = system.run_cli("rollout", "create", f"shapes:{version}", "--selector", "fleet=plans")
    assert out.returncode == 0, out.stderr


def test_the_jetson_gets_the_plan_and_the_cpu_box_the_onnx(system: System, tmp_path: Path) -> None:
    system.start_agent("orin-1", {"fleet": "plans"}, profile="jetson-orin-nano-8gb-jp6",
                       hooks={"fingerprint": ORIN})  # fmt: skip
    system.start_agent("cpu-1", {"fleet": "plans"})
    for version, path in (("v1", V1), ("v2", V2)):
        out = system.run_cli("model", "push", "shapes", str(path), "--version", version)
        assert out.returncode == 0, out.stderr
    plan = tmp_path / "orin.plan"
    plan.write_bytes(os.urandom(64 * 1024))
    out = system.run_cli("model", "plan", "push", "shapes:v2", str(plan),
                         "--compute-capability", "8.7", "--tensorrt", "8.6.2")  # fmt: skip
    assert out.returncode == 0, out.stderr
    # A rollout goes to the devices the controller knows when it is created (and is refused
    # when it knows none): wait for both to register.
    wait_for("both agents registered", lambda: system.device("orin-1") and system.device("cpu-1"))
    try:
        _roll_out(system, "v1")  # v1 has no plan: both run its ONNX
        for device_id in ("orin-1", "cpu-1"):
            wait_for(f"{device_id} on v1",
                     lambda d=device_id: _state(system, d, "v1", "COMMITTED"))  # fmt: skip
        orin = system.device("orin-1")
        assert orin is not None and orin["fingerprint"]["profile"] == "jetson-orin-nano-8gb-jp6"

        _roll_out(system, "v2")
        wait_for("cpu-1 on v2", lambda: _state(system, "cpu-1", "v2", "COMMITTED"))
        failed = wait_for("orin-1 to try the plan", lambda: (
            (d := system.device("orin-1")) and d["error"] and "tensorrt" in d["error"] and d
        ))  # fmt: skip
    except AssertionError as e:
        raise AssertionError(f"{e}\n{_diagnose(system)}") from e
    # Still serving v1, and it says why the plan did not run.
    assert failed["version"] == "v1" and failed["phase"] in ("FAILED", "COMMITTED"), failed
    assert "needs tensorrt and pycuda" in failed["error"]
    # The plan came through TUF: verified, stored under its digest with its model info.
    stored = list((system.procs.folder / "orin-1" / "models").glob("*.plan"))
    assert [p.read_bytes() for p in stored] == [plan.read_bytes()]
    assert stored[0].with_suffix(".json").is_file()
    assert not list((system.procs.folder / "cpu-1" / "models").glob("*.plan"))
    assert PLAN_TARGET in system.procs.log("orin-1")
