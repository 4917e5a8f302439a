"""``edgefleet infer``: detections of a model on image files, as a table or JSON lines."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TextIO

import cv2
import numpy as np
import numpy.typing as npt
from edgefleet.shared.errors import ArtifactError, ConfigError

from edgefleet.runtime.backend import Detection
from edgefleet.runtime.detector import Detector


def read_image(path: Path) -> npt.NDArray[np.uint8]:
    if not path.is_file():
        raise ArtifactError(f"image not found: {path}")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ArtifactError(f"not a readable image: {path}")
    return image.astype(np.uint8, copy=False)


def _check_thresholds(conf: float, iou: float) -> None:
    if not 0.0 <= conf < 1.0:
        raise ConfigError(f"--conf must be in [0, 1), got {conf}")
    if not 0.0 < iou <= 1.0:
        raise ConfigError(f"--iou must be in (0, 1], got {iou}")


def format_table(image: str, detections: list[Detection]) -> str:
    lines = [f"{image}: {len(detections)} detection(s)"]
    if detections:
        lines.append(f"  {'class':<14} {'conf':>6}  {'x1':>8} {'y1':>8} {'x2':>8} {'y2':>8}")
    for d in detections:
        x1, y1, x2, y2 = d.box_xyxy
        name = f"{d.class_id}:{d.class_name}"
        lines.append(f"  {name:<14} {d.confidence:6.3f}  {x1:8.1f} {y1:8.1f} {x2:8.1f} {y2:8.1f}")
    return "\n".join(lines)


def run(
    model: Path,
    images: list[Path],
    *,
    conf: float,
    iou: float,
    as_json: bool,
    out: TextIO | None = None,
) -> None:
    out = out or sys.stdout
    _check_thresholds(conf, iou)
    # Read every image first so a bad path fails before any output is printed.
    frames = [read_image(p) for p in images]
    with Detector.from_onnx(model, conf=conf, iou=iou) as detector:
        for path, frame in zip(images, frames, strict=True):
            detections = detector.detect(frame)
            if as_json:
                record = {"image": str(path), "detections": [d.to_json() for d in detections]}
                out.write(json.dumps(record) + "\n")
            else:
                out.write(format_table(str(path), detections) + "\n")
