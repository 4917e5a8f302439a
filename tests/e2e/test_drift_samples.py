"""End to end, issue 10 item 6: with the default sampling budget, a device whose scene
changes sends frames of the new scene home within a minute (its own drift score opens the
drift budget), while the steady scene before it was paced.

A real agent process on a real Mosquitto and controller, the shipped v2 and its card built
from the very frames the agent watches; ``samples list --since`` reads what came home."""

from __future__ import annotations

import queue
import shutil
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from edgefleet.shared.protocol import TelemetryWindow

from tests.e2e.conftest import REPO, System, scored_windows, set_light, telemetry_of, wait_for

pytestmark = [pytest.mark.broker, pytest.mark.slow]

V2 = REPO / "models" / "shapes" / "v2" / "model.onnx"
DEVICE = "cam-budget"


@pytest.fixture
def windows(system: System) -> Iterator[queue.Queue[TelemetryWindow]]:
    with telemetry_of(system.broker.port, DEVICE) as got:
        yield got


def test_a_changed_scene_gets_its_frames_home_within_a_minute(
    system: System, windows: queue.Queue[TelemetryWindow], tmp_path: Path
) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    set_light(frames, 1.0)
    pushed = system.run_cli("model", "push", "shapes", str(V2), "--version", "v2",
                            "--validation", str(frames))  # fmt: skip
    assert pushed.returncode == 0, pushed.stderr
    # The default strategies and budget; uploads every second.
    system.start_agent(DEVICE, {"site": "store-1", "fleet": "budget"}, telemetry_window_s=4,
                       source={"kind": "folder", "path": str(frames), "fps": 5},
                       sampling={"upload_interval_s": 1})  # fmt: skip
    wait_for("agent online", lambda: (d := system.device(DEVICE)) and d["online"], timeout=60)
    out = system.run_cli("rollout", "create", "shapes:v2", "--selector", "fleet=budget")
    assert out.returncode == 0, out.stderr
    wait_for("agent on v2", lambda: (d := system.device(DEVICE)) and d["phase"] == "COMMITTED"
             and d["version"] == "v2", timeout=120)  # fmt: skip

    def samples(**params: Any) -> list[dict[str, Any]]:
        r = system.http.get("/v1/samples", params={"device_id": DEVICE, **params})
        return list(r.json()["data"])

    steady = scored_windows(windows, 8)  # about 30 s of the card's own scene
    assert max(w.drift_psi or 0.0 for w in steady[1:]) < 0.25  # the first may straddle
    calm = samples()
    # Paced: 2 frames of the bucket's 2.5 (the old budget: 2 a minute until 30 an hour).
    assert len(calm) <= 4

    changed_at = datetime.now(timezone.utc)
    set_light(frames, 0.35)
    t0 = time.monotonic()

    def dark_home() -> list[dict[str, Any]]:
        got = samples(since=changed_at.isoformat())
        return got if len(got) >= 8 else []

    dark = wait_for("8 frames of the dark scene at home", dark_home, timeout=60)
    took = time.monotonic() - t0
    assert any("drift burst" in s["reason"] for s in dark)
    print(f"steady: {len(calm)} sample(s); dark: {len(dark)} sample(s) in {took:.0f} s")
    assert "Traceback" not in system.procs.log(DEVICE)
    shutil.rmtree(frames)
