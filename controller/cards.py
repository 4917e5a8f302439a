"""Model cards: run a model over validation images, keep what drift will be measured against.

:func:`build_card` runs the agent's own :class:`Detector` (ONNX Runtime, the same
letterbox and decoding as on the device) and counts with the telemetry window's own
measurement (:class:`~edgefleet.shared.measure.ConfidenceTally`: same candidates,
threshold and bins, overall and per class), so a device looking at these images reads no
drift. :class:`CardStore` keeps one JSON file per version in the data folder.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
from edgefleet.controller.map50 import Box, map50
from edgefleet.controller.registry import source_label
from edgefleet.shared.card import ModelCard
from edgefleet.shared.durable import write_bytes
from edgefleet.shared.errors import ArtifactError, ConfigError, NotFoundError
from edgefleet.shared.measure import MEASURE_CONF, ConfidenceTally
from pydantic import ValidationError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
VAL_CONF = 0.001  # as Ultralytics val: mAP needs the whole precision-recall curve


def validation_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise ConfigError(f"validation folder {folder} does not exist")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ConfigError(f"no images in validation folder {folder}")
    return files


def label_path(image: Path) -> Path | None:
    """YOLO label next to the image, or in the sibling ``labels/`` tree (Ultralytics)."""
    beside = image.with_suffix(".txt")
    if beside.is_file():
        return beside
    parts = list(image.parts)
    if "images" in parts:
        i = len(parts) - 1 - parts[::-1].index("images")
        other = Path(*parts[:i], "labels", *parts[i + 1 :]).with_suffix(".txt")
        if other.is_file():
            return other
    return None


def read_labels(path: Path, width: int, height: int) -> list[Box]:
    boxes = []
    for line in path.read_text(encoding="utf-8").splitlines():
        fields = line.split()
        if len(fields) < 5:
            continue
        try:
            k, cx, cy, w, h = int(fields[0]), *(float(f) for f in fields[1:5])
        except ValueError as e:
            raise ConfigError(f"{path}: not a YOLO label line: {line!r}") from e
        x1, y1 = (cx - w / 2) * width, (cy - h / 2) * height
        boxes.append(Box(k, (x1, y1, x1 + w * width, y1 + h * height)))
    return boxes


def _frames(files: list[Path]) -> Iterator[tuple[Path, np.ndarray]]:
    for path in files:
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is not None:
            yield path, np.asarray(img, dtype=np.uint8)


def build_card(onnx_path: Path, folder: Path, name: str, version: str) -> ModelCard:
    """Run ``onnx_path`` over every image under ``folder`` and summarise it."""
    from edgefleet.runtime.detector import Detector

    files = validation_images(folder)
    tally = ConfidenceTally(MEASURE_CONF)
    pairs: list[tuple[list[Box], list[Box]]] = []
    with Detector.from_onnx(onnx_path, conf=VAL_CONF) as detector:
        for path, img in _frames(files):
            dets = detector.detect(img)
            tally.add_frame(dets)
            labels = label_path(path)
            if labels is not None:
                preds = [Box(d.class_id, d.box_xyxy, d.confidence) for d in dets]
                pairs.append((preds, read_labels(labels, img.shape[1], img.shape[0])))
        names = detector.info.names
    if tally.frames == 0:
        raise ConfigError(f"no readable images in validation folder {folder}")
    return _card(name=name, version=version, tally=tally, pairs=pairs, names=names)


def _card(
    *,
    name: str,
    version: str,
    tally: ConfidenceTally,
    pairs: list[tuple[list[Box], list[Box]]],
    names: dict[int, str],
) -> ModelCard:
    m, per_class = map50(pairs) if pairs else (None, {})
    return ModelCard(
        model=name,
        version=version,
        images=tally.frames,
        conf=tally.conf,
        confidence_edges=list(tally.edges),
        confidence_counts=tally.counts(),
        per_class_confidence=tally.per_class(),
        detections=tally.detections,
        detections_per_frame=tally.detections / tally.frames,
        labelled_images=len(pairs),
        map50=m,
        ap50_per_class={names.get(k, str(k)): round(v, 6) for k, v in per_class.items()},
        names=dict(names),
    )


class CardStore:
    """One JSON card per model version under ``DATA/cards/<name>/<version>.json``.

    A re-signed copy of a version (``v1-rb9``: a rollback, or an older version rolled out
    again, ``rollouts/releases.py``) runs the same bytes, so without a card of its own it
    has its source's: devices that run it keep their drift baseline."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _path(self, name: str, version: str) -> Path:
        return self.folder / name / f"{version}.json"

    def put(self, card: ModelCard) -> None:
        write_bytes(self._path(card.model, card.version), card.to_bytes())

    def get(self, name: str, version: str) -> ModelCard:
        path = self._path(name, version)
        source = source_label(version)
        if source != version and not path.exists():
            path = self._path(name, source)
        try:
            return ModelCard.model_validate_json(path.read_bytes())
        except FileNotFoundError as e:
            raise NotFoundError(f"{name}:{version} has no model card", model=name) from e
        except ValidationError as e:
            raise ArtifactError(f"the model card of {name}:{version} is unreadable") from e

    def find(self, name: str | None, version: str | None) -> ModelCard | None:
        if not name or not version:
            return None
        try:
            return self.get(name, version)
        except (NotFoundError, ArtifactError):
            return None
