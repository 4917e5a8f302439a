"""Run a model over a registered validation set: mAP50 (per class) and latency.

Accuracy: the agent's own :class:`Detector` (ONNX Runtime, its letterbox and decoding) at
the validation threshold (conf 0.001, as Ultralytics ``val``), matched at IoU 0.5 as
controller/map50.py does. Latency: a second pass at the device threshold (conf 0.25) over
up to :data:`LATENCY_IMAGES` images after a warm-up, one image at a time, letterbox +
inference + decoding, on the controller's CPU (ONNX Runtime's CPU provider): that is the
reference profile (:func:`reference_profile`), since the controller has no device of each
firmware profile to time on. The result is cached per (model digest, set digest) under
``DATA/gate/evals/``, so production's evaluation is computed once per set.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import cv2
import numpy as np
from edgefleet.controller.cards import VAL_CONF, label_path, read_labels, validation_images
from edgefleet.controller.map50 import Box, match_image, ranked_ap
from edgefleet.controller.validation_gate import ClassRecords, Evaluation
from edgefleet.shared.durable import write_bytes
from edgefleet.shared.errors import ArtifactError, ConfigError
from edgefleet.shared.measure import MEASURE_CONF
from pydantic import ValidationError

LATENCY_IMAGES = 30
WARM_UP_RUNS = 3


def reference_profile() -> str:
    import onnxruntime

    return (
        f"controller-cpu (onnxruntime {onnxruntime.__version__} CPU, {os.cpu_count()} "
        f"cores, {platform.machine()})"
    )


def _read(path: Path) -> np.ndarray | None:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return None if img is None else np.asarray(img, dtype=np.uint8)


def _accuracy(onnx_path: Path, files: list[Path]) -> tuple[dict[str, ClassRecords], int]:
    """Per class name: ranked (image, hit) records and objects per labelled image."""
    from edgefleet.runtime.detector import Detector

    rows: list[tuple[str, float, int, bool]] = []  # class, confidence, image, hit
    truth: list[dict[str, int]] = []
    with Detector.from_onnx(onnx_path, conf=VAL_CONF) as detector:
        names = detector.info.names
        for path in files:
            labels, img = label_path(path), _read(path)
            if labels is None or img is None:
                continue
            dets = detector.detect(img)
            preds = [Box(d.class_id, d.box_xyxy, d.confidence) for d in dets]
            gt = read_labels(labels, img.shape[1], img.shape[0])
            i = len(truth)
            rows.extend((names.get(k, str(k)), c, i, hit) for k, c, hit in match_image(preds, gt))
            counts: dict[str, int] = {}
            for t in gt:
                key = names.get(t.class_id, str(t.class_id))
                counts[key] = counts.get(key, 0) + 1
            truth.append(counts)
    classes = sorted({r[0] for r in rows} | {k for t in truth for k in t})
    out = {}
    for cls in classes:
        mine = sorted((r for r in rows if r[0] == cls), key=lambda r: -r[1])
        out[cls] = ClassRecords(
            image=[r[2] for r in mine],
            hit=[r[3] for r in mine],
            truth=[t.get(cls, 0) for t in truth],
        )
    return out, len(truth)


def _latency(onnx_path: Path, files: list[Path]) -> tuple[float, float]:
    """Median and 90th percentile milliseconds per image at the device threshold."""
    from edgefleet.runtime.detector import Detector

    images = [img for img in map(_read, files[:LATENCY_IMAGES]) if img is not None]
    if not images:
        raise ConfigError("no readable images in the validation set")
    times = []
    with Detector.from_onnx(onnx_path, conf=MEASURE_CONF) as detector:
        for _ in range(WARM_UP_RUNS):
            detector.detect(images[0])
        for img in images:
            start = time.perf_counter()
            detector.detect(img)
            times.append((time.perf_counter() - start) * 1000.0)
    p50, p90 = np.percentile(times, [50, 90])
    return round(float(p50), 3), round(float(p90), 3)


def evaluate(onnx_path: Path, dataset_dir: Path, model_sha256: str, digest: str) -> Evaluation:
    files = validation_images(dataset_dir / "images")
    classes, labelled = _accuracy(onnx_path, files)
    ones = np.ones(labelled)
    ap50 = {}
    for cls, rec in classes.items():
        n = sum(rec.truth)
        if n > 0:
            hits = np.asarray(rec.hit, np.float64)
            ap50[cls] = round(ranked_ap(hits, ones[np.asarray(rec.image, np.intp)], float(n)), 6)
    p50, p90 = _latency(onnx_path, files)
    return Evaluation(
        model_sha256=model_sha256,
        dataset_digest=digest,
        images=len(files),
        labelled=labelled,
        map50=round(float(np.mean(list(ap50.values()))), 6) if ap50 else None,
        ap50=ap50,
        instances={cls: sum(r.truth) for cls, r in classes.items() if sum(r.truth) > 0},
        latency_p50_ms=p50,
        latency_p90_ms=p90,
        profile=reference_profile(),
        classes=classes,
    )


class EvaluationCache:
    """One JSON evaluation per (model sha256, set digest) under ``DATA/gate/evals/``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _path(self, model_sha256: str, digest: str) -> Path:
        return self.folder / f"{model_sha256}-{digest}.json"

    def get(self, model_sha256: str, digest: str) -> Evaluation | None:
        try:
            return Evaluation.model_validate_json(self._path(model_sha256, digest).read_bytes())
        except FileNotFoundError:
            return None
        except ValidationError as e:
            raise ArtifactError(f"cached evaluation of {model_sha256[:12]} is unreadable") from e

    def evaluate(
        self, onnx_path: Path, dataset_dir: Path, model_sha256: str, digest: str
    ) -> Evaluation:
        found = self.get(model_sha256, digest)
        if found is not None:
            return found
        result = evaluate(onnx_path, dataset_dir, model_sha256, digest)
        write_bytes(self._path(model_sha256, digest), result.model_dump_json().encode())
        return result
