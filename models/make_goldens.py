"""Golden outputs: what Ultralytics itself predicts with each shipped ONNX on the samples.

    YOLO_OFFLINE=1 python models/make_goldens.py            # goldens from models/samples/
    YOLO_OFFLINE=1 python models/make_goldens.py --pick-samples datasets/shapes/images/val

The agent's runtime is tested against these files (tests/agent/test_runtime_golden.py),
so the device never needs torch or ultralytics to prove it decodes like Ultralytics.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="yolo-cfg-"))

ROOT = Path(__file__).resolve().parent
SAMPLES = ROOT / "samples"
GOLDEN = ROOT / "golden"
CONF, IOU = 0.25, 0.7

# model id -> ONNX path relative to models/
MODELS = {
    "shapes-v1-e2e": "shapes/v1/model.onnx",
    "shapes-v2-e2e": "shapes/v2/model.onnx",
    "shapes-v2-raw": "shapes/v2/model-raw.onnx",
    "yolo11n-shapes": "yolo11n-shapes/model.onnx",
}


def pick_samples(val_dir: Path, n: int = 7) -> None:
    """Copy n val images of clearly different sizes / aspect ratios."""
    import cv2

    images = sorted(val_dir.glob("*.jpg"))
    by_aspect = sorted(images, key=lambda p: _aspect(cv2.imread(str(p))))
    step = max(1, len(by_aspect) // n)
    SAMPLES.mkdir(exist_ok=True)
    for i, src in enumerate(by_aspect[::step][:n]):
        img = cv2.imread(str(src))
        h, w = img.shape[:2]
        cv2.imwrite(str(SAMPLES / f"sample{i}_{w}x{h}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 90])


def _aspect(img: object) -> float:
    h, w = img.shape[:2]  # type: ignore[attr-defined]
    return w / h


def predict(onnx: Path, images: list[Path]) -> dict[str, list[dict[str, object]]]:
    from ultralytics import YOLO

    model = YOLO(str(onnx), task="detect")
    out: dict[str, list[dict[str, object]]] = {}
    for img in images:
        (r,) = model.predict(str(img), conf=CONF, iou=IOU, device="cpu", verbose=False)
        out[img.name] = [
            {
                "class_id": int(c),
                "class_name": r.names[int(c)],
                "confidence": float(s),
                "box_xyxy": [float(v) for v in box],
            }
            for box, s, c in zip(
                r.boxes.xyxy.tolist(), r.boxes.conf.tolist(), r.boxes.cls.tolist(), strict=True
            )
        ]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description="write golden Ultralytics predictions")
    ap.add_argument("--pick-samples", type=Path, metavar="VAL_DIR")
    a = ap.parse_args()
    if a.pick_samples:
        if SAMPLES.exists():
            shutil.rmtree(SAMPLES)
        pick_samples(a.pick_samples)
    images = sorted(SAMPLES.glob("*.jpg"))
    GOLDEN.mkdir(exist_ok=True)
    import ultralytics

    for model_id, rel in MODELS.items():
        golden = {
            "model": rel,
            "ultralytics": ultralytics.__version__,
            "conf": CONF,
            "iou": IOU,
            "images": predict(ROOT / rel, images),
        }
        (GOLDEN / f"{model_id}.json").write_text(json.dumps(golden, indent=1) + "\n")
        n = sum(len(v) for v in golden["images"].values())
        print(f"[golden] {model_id}: {n} detections on {len(images)} images")


if __name__ == "__main__":
    main()
