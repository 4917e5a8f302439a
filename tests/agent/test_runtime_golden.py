"""The runtime decodes exactly like Ultralytics: every committed golden file must match.

Goldens come from ``YOLO(model.onnx).predict()`` (models/make_goldens.py); this test needs
only onnxruntime, so it runs on the agent's dependencies.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest

from edgefleet.runtime.backend import Detection
from edgefleet.runtime.detector import Detector

MODELS = Path(__file__).resolve().parents[2] / "models"
GOLDENS = sorted((MODELS / "golden").glob("*.json"))
IOU_MIN = 0.99
CONF_TOL = 1e-3


def box_iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def assert_matches(got: list[Detection], want: list[dict], where: str) -> None:
    """Greedy one-to-one matching, most confident golden first. An end-to-end head can
    return the same box twice with different classes, so candidates are the unmatched
    detections of the same class, ranked by IoU and then by confidence distance."""
    assert len(got) == len(want), f"{where}: {len(got)} detections, golden has {len(want)}"
    free = list(range(len(got)))
    for w in sorted(want, key=lambda d: -d["confidence"]):
        same = [i for i in free if got[i].class_id == w["class_id"]]
        assert same, f"{where}: no detection of class {w['class_id']} left for golden {w}"

        def rank(i: int, w: dict = w) -> float:
            return box_iou(got[i].box_xyxy, w["box_xyxy"]) - abs(
                got[i].confidence - w["confidence"]
            )

        k = max(same, key=rank)
        free.remove(k)
        g = got[k]
        iou = box_iou(g.box_xyxy, w["box_xyxy"])
        assert iou >= IOU_MIN, f"{where}: best IoU {iou:.4f} for golden {w}"
        assert g.class_name == w["class_name"]
        assert abs(g.confidence - w["confidence"]) <= CONF_TOL, f"{where}: {g} vs {w}"


def test_goldens_are_committed():
    assert {p.stem for p in GOLDENS} >= {
        "shapes-v1-e2e",
        "shapes-v2-e2e",
        "shapes-v2-raw",
        "yolo11n-shapes",
    }


@pytest.mark.parametrize("golden_path", GOLDENS, ids=[p.stem for p in GOLDENS])
def test_detector_matches_ultralytics(golden_path: Path):
    golden = json.loads(golden_path.read_text())
    detector = Detector.from_onnx(MODELS / golden["model"], conf=golden["conf"], iou=golden["iou"])
    try:
        expect_e2e = golden_path.stem.endswith("-e2e")
        assert detector.info.end2end is expect_e2e
        assert sum(len(v) for v in golden["images"].values()) > 0, "golden has no detections"
        for name, want in golden["images"].items():
            image = cv2.imread(str(MODELS / "samples" / name))
            assert image is not None
            assert_matches(detector.detect(image), want, f"{golden_path.stem}/{name}")
    finally:
        detector.close()


def test_model_info_from_metadata():
    detector = Detector.from_onnx(MODELS / "shapes/v2/model.onnx")
    info = detector.info
    detector.warm_up()
    detector.close()
    assert info.task == "detect"
    assert info.stride == 32
    assert info.imgsz == (160, 160)
    assert list(info.names.values()) == ["circle", "square", "triangle", "star", "cross"]


@pytest.mark.export
@pytest.mark.slow
@pytest.mark.parametrize("model", ["shapes/v2/model.onnx", "shapes/v2/model-raw.onnx"])
def test_live_against_ultralytics_low_conf(model: str, tmp_path: Path, monkeypatch):
    """Re-run Ultralytics now at a low threshold, where NMS has real work to do."""
    monkeypatch.setenv("YOLO_OFFLINE", "1")
    monkeypatch.setenv("YOLO_CONFIG_DIR", str(tmp_path))
    ultralytics = pytest.importorskip("ultralytics", reason="needs the export extra")
    yolo = ultralytics.YOLO(str(MODELS / model), task="detect")
    detector = Detector.from_onnx(MODELS / model, conf=0.05, iou=0.5)
    try:
        for path in sorted((MODELS / "samples").glob("*.jpg")):
            (r,) = yolo.predict(str(path), conf=0.05, iou=0.5, device="cpu", verbose=False)
            want = [
                {"class_id": int(c), "class_name": r.names[int(c)], "confidence": s, "box_xyxy": b}
                for b, s, c in zip(
                    r.boxes.xyxy.tolist(), r.boxes.conf.tolist(), r.boxes.cls.tolist(), strict=True
                )
            ]
            assert_matches(detector.detect(cv2.imread(str(path))), want, f"{model}/{path.name}")
    finally:
        detector.close()
