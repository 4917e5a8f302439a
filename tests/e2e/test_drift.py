"""End to end, the data loop: a real agent process on real Mosquitto runs the pushed model,
its frames go dark, its drift scores rise, the controller fires an alert (API, CLI and a
webhook), low-confidence frames arrive, ``samples export`` writes a YOLO dataset, and
when the light comes back the alert resolves."""

from __future__ import annotations

import json
import queue
import shutil
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import cv2
import pytest
import yaml
from edgefleet.shared.protocol import TelemetryWindow

from tests.e2e.conftest import (
    REPO,
    SAMPLES,
    System,
    cli,
    running_system,
    scored_windows,
    set_light,
    telemetry_of,
    wait_for,
)

pytestmark = [pytest.mark.broker, pytest.mark.slow]

V2 = REPO / "models" / "shapes" / "v2" / "model.onnx"
DEVICE = "cam-drift"
ALERTS = {
    # The shipped samples darkened to 35 % score PSI 0.9-1.7 against their own card in
    # windows of 10 to 25 frames (smoothed PSI, shared/drift.py); the same light < 0.05.
    # Windows of 4 s at 5 fps: a window of 3 frames (2 s on a loaded machine) reads 0.2-0.9
    # dark and up to 0.27 in the same light, too little evidence either way.
    "rules": [{"metric": "psi", "fire_above": 0.5, "clear_below": 0.25, "fire_after": 2,
               "clear_after": 2, "min_detections": 5}],
    "interval_s": 1,
}  # fmt: skip


@pytest.fixture
def webhook() -> Iterator[tuple[str, queue.Queue[dict[str, Any]]]]:
    got: queue.Queue[dict[str, Any]] = queue.Queue()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            got.put(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/alerts", got
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def drift_system(tmp_path: Path, webhook: tuple[str, Any]) -> Iterator[System]:
    """Like the e2e ``system`` fixture, with DATA/alerts.yaml written before the start."""
    data = tmp_path / "controller"
    data.mkdir()
    (data / "alerts.yaml").write_text(yaml.safe_dump({**ALERTS, "webhooks": [webhook[0]]}))
    with running_system(tmp_path, data) as s:
        yield s


def start_agent(system: System, frames: Path) -> None:
    cfg = {
        "device_id": DEVICE, "labels": {"site": "store-9", "fleet": "drift"},
        "controller_url": system.url, "mqtt_url": system.broker.url,
        "data_dir": str(system.procs.folder / DEVICE),
        "source": {"kind": "folder", "path": str(frames), "fps": 5},
        "poll_interval_s": 5, "telemetry_window_s": 4,
        "sampling": {"upload_interval_s": 1, "strategies": [
            {"name": "uncertain", "kind": "near_threshold", "band": [0.1, 0.45],
             "per_minute": 30},
        ]},
    }  # fmt: skip
    path = system.procs.folder / f"{DEVICE}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    system.procs.start(DEVICE, cli("agent", "run", "--config", str(path)))


@pytest.fixture
def windows(drift_system: System) -> Iterator[queue.Queue[TelemetryWindow]]:
    with telemetry_of(drift_system.broker.port, DEVICE) as got:
        yield got


def next_scored(windows: queue.Queue[TelemetryWindow], n: int) -> list[float]:
    """PSI of the next ``n`` windows on v2 that carry a drift score."""
    return [w.drift_psi or 0.0 for w in scored_windows(windows, n)]


def test_drift_alert_samples_export(
    drift_system: System, windows: queue.Queue[TelemetryWindow],
    webhook: tuple[str, queue.Queue[dict[str, Any]]], tmp_path: Path,
) -> None:  # fmt: skip
    system = drift_system
    frames = tmp_path / "frames"
    frames.mkdir()
    set_light(frames, 1.0)
    pushed = system.run_cli("model", "push", "shapes", str(V2), "--version", "v2",
                            "--validation", str(frames))  # fmt: skip
    assert pushed.returncode == 0, pushed.stderr
    start_agent(system, frames)
    wait_for("agent online", lambda: (d := system.device(DEVICE)) and d["online"], timeout=60)
    out = system.run_cli("rollout", "create", "shapes:v2", "--selector", "fleet=drift")
    assert out.returncode == 0, out.stderr
    wait_for("agent on v2", lambda: (d := system.device(DEVICE)) and d["phase"] == "COMMITTED"
             and d["version"] == "v2", timeout=120)  # fmt: skip

    # Same light as the card: the agent's own scores stay low, no alert. The first window
    # on v2 may straddle the swap (a few frames: PSI 0.7 was seen on a loaded machine).
    assert max(next_scored(windows, 4)[1:]) < 0.3
    assert system.http.get("/v1/alerts").json()["count"] == 0

    set_light(frames, 0.35)
    while windows.qsize():  # what was measured before the change
        windows.get_nowait()
    assert min(next_scored(windows, 3)[1:]) > 0.5  # the first may straddle the change
    fired = webhook[1].get(timeout=60)
    assert fired["event"] == "alert.fired"
    assert fired["alert"]["device_id"] == DEVICE and fired["alert"]["labels"]["site"] == "store-9"
    listed = system.run_cli("alerts", "list", "--state", "firing")
    assert listed.returncode == 0 and f"device:{DEVICE}" in listed.stdout
    dark_since = datetime.fromisoformat(fired["alert"]["fired_at"]) - timedelta(seconds=3)
    params = {"group_by": "site", "bucket_s": 0, "since": dark_since.isoformat()}
    site = system.http.get("/v1/drift", params=params).json()
    assert site["data"][0]["group"] == "store-9" and site["data"][0]["psi"] > 0.25

    def dark_samples() -> list[dict[str, Any]]:
        data = system.http.get("/v1/samples").json()["data"]
        return [s for s in data if s["version"] == "v2" and s["received_at"] > fired["alert"]
                ["fired_at"][:19]]  # fmt: skip

    wait_for("low-confidence frames from the dark store", dark_samples, timeout=60)
    dataset = tmp_path / "dataset"
    exported = system.run_cli("samples", "export", "--format", "yolo", "--out", str(dataset))
    assert exported.returncode == 0, exported.stderr
    data_yaml = yaml.safe_load((dataset / "data.yaml").read_text())
    # The model's own classes (from its card), so ids line up for fine-tuning.
    assert data_yaml["names"] == dict(enumerate(["circle", "square", "triangle", "star", "cross"]))
    images = list((dataset / "images").rglob("*.jpg"))
    labels = list((dataset / "labels").rglob("*.txt"))
    assert images and len(labels) == len(images)

    set_light(frames, 1.0)
    resolved = webhook[1].get(timeout=60)
    assert resolved["event"] == "alert.resolved" and resolved["alert"]["id"] == fired["alert"]["id"]
    assert "Traceback" not in system.procs.log(DEVICE)
    assert "Traceback" not in system.procs.log("controller")
    shutil.rmtree(frames)


@pytest.mark.export
def test_retrain_fine_tunes_on_an_exported_dataset(tmp_path: Path) -> None:
    """``edgefleet demo --retrain``'s training step: Ultralytics, offline, exported to ONNX
    that the agent's runtime loads (one epoch on a small synthetic set keeps it short)."""
    pytest.importorskip("ultralytics")
    import importlib.util

    from edgefleet.demo_drift import retrain
    from edgefleet.runtime.detector import Detector

    spec = importlib.util.spec_from_file_location("make_dataset", REPO / "models/make_dataset.py")
    assert spec and spec.loader
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    data_yaml = gen.generate(tmp_path / "ds", 16, 4, 5)
    onnx = retrain(data_yaml, REPO / "models/shapes/v2/model.pt", tmp_path / "rt", epochs=1)
    with Detector.from_onnx(onnx) as det:
        assert det.info.end2end and len(det.info.names) == 5
        assert isinstance(det.detect(cv2.imread(str(sorted(SAMPLES.glob("*.jpg"))[0]))), list)
