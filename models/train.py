"""Train the shipped "shapes" models from their YAML (no pretrained weights) and export ONNX.

Stages (run in order; each reads the previous one's output):

    v1       yolo26n.yaml from scratch, 8 epochs        -> models/shapes/v1/
    v2       yolo26n.yaml from scratch, 30 epochs       -> models/shapes/v2/
    classic  yolo11n.yaml from scratch, 15 epochs       -> models/yolo11n-shapes/
    export   ONNX exports of all of the above
    metrics  mAP50 of each version on the val split   -> models/shapes/metrics.json

    YOLO_OFFLINE=1 python models/train.py all --data datasets/shapes/data.yaml

Nothing is downloaded: pretrained=False, amp=False (the AMP check fetches yolo weights),
plots=False (plotting fetches a font), and settings live in a temp YOLO_CONFIG_DIR.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="yolo-cfg-"))

from ultralytics import YOLO

ROOT = Path(__file__).resolve().parent
IMGSZ = 160
OPSET = 17
COMMON: dict[str, object] = {
    "imgsz": IMGSZ,
    "batch": 32,
    "device": "cpu",
    "workers": 2,
    "plots": False,
    "pretrained": False,
    "amp": False,
    "val": False,  # the final epoch is still validated
    "cache": "ram",
    "seed": 0,
    "deterministic": True,
    "exist_ok": True,
    "verbose": True,
}


def _train(model_src: str, out_dir: Path, name: str, data: str, epochs: int, **kw: object) -> None:
    t0 = time.monotonic()
    model = YOLO(model_src)
    model.train(
        data=data, epochs=epochs, project=str(ROOT.parent / "runs"), name=name, **COMMON, **kw
    )
    best = Path(model.trainer.best)  # optimizer already stripped by the trainer (fp16, no EMA)
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(best, out_dir / "model.pt")
    print(f"[train] {name}: {epochs} epochs in {time.monotonic() - t0:.0f} s -> {out_dir}/model.pt")


def _export(pt: Path, dst: Path, *, end2end: bool) -> None:
    """Ultralytics 8.4: ``nms=False`` keeps YOLO26's NMS-free one-to-one head, output
    (1, 300, 6); the default ``nms=None`` exports the raw head (1, 4 + nc, anchors) that
    needs NMS afterwards (and is the only kind a classic YOLO11 head has)."""
    kw: dict[str, object] = {"nms": False} if end2end else {}
    with tempfile.TemporaryDirectory() as tmp:  # the exporter writes next to the .pt
        src = Path(shutil.copy(pt, Path(tmp) / "model.pt"))
        f = YOLO(str(src)).export(
            format="onnx", imgsz=IMGSZ, opset=OPSET, dynamic=False, simplify=True, **kw
        )
        shutil.move(f, dst)
    print(f"[export] {dst} ({dst.stat().st_size / 1e6:.1f} MB)")


def stage_export() -> None:
    for v in ("v1", "v2"):
        d = ROOT / "shapes" / v
        _export(d / "model.pt", d / "model.onnx", end2end=True)
    _export(ROOT / "shapes/v2/model.pt", ROOT / "shapes/v2/model-raw.onnx", end2end=False)
    _export(ROOT / "yolo11n-shapes/model.pt", ROOT / "yolo11n-shapes/model.onnx", end2end=False)


def stage_metrics(data: str) -> None:
    out: dict[str, dict[str, float]] = {}
    for key, pt in (
        ("shapes/v1", ROOT / "shapes/v1/model.pt"),
        ("shapes/v2", ROOT / "shapes/v2/model.pt"),
        ("yolo11n-shapes", ROOT / "yolo11n-shapes/model.pt"),
    ):
        m = YOLO(str(pt)).val(
            data=data, imgsz=IMGSZ, batch=32, device="cpu", plots=False, workers=2
        )
        out[key] = {"mAP50": round(float(m.box.map50), 4), "mAP50-95": round(float(m.box.map), 4)}
        print(f"[metrics] {key}: {out[key]}")
    (ROOT / "shapes" / "metrics.json").write_text(json.dumps(out, indent=2) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description="train and export the shapes models")
    ap.add_argument("stage", choices=["v1", "v2", "classic", "export", "metrics", "all"])
    ap.add_argument("--data", default="datasets/shapes/data.yaml")
    ap.add_argument("--v1-epochs", type=int, default=8)
    ap.add_argument("--v2-epochs", type=int, default=30)
    ap.add_argument("--classic-epochs", type=int, default=15)
    a = ap.parse_args()
    data = str(Path(a.data).resolve())
    if a.stage in ("v1", "all"):
        _train("yolo26n.yaml", ROOT / "shapes/v1", "shapes-v1", data, a.v1_epochs)
    if a.stage in ("v2", "all"):
        # From scratch, as the shipped v2 was: the first run handed v1's checkpoint to
        # Ultralytics, but with pretrained=False (no downloads) 8.4 starts from fresh weights.
        _train("yolo26n.yaml", ROOT / "shapes/v2", "shapes-v2", data, a.v2_epochs)
    if a.stage in ("classic", "all"):
        _train("yolo11n.yaml", ROOT / "yolo11n-shapes", "yolo11n-shapes", data, a.classic_epochs)
    if a.stage in ("export", "all"):
        stage_export()
    if a.stage in ("metrics", "all"):
        stage_metrics(data)


if __name__ == "__main__":
    main()
