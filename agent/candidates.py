"""Detections *and* the candidates below the confidence cut, from one inference.

The sampler wants the uncertain boxes that the application never sees (score under
``conf``). :class:`CandidateDetector` wraps the runtime's Detector without changing it:
``detect`` is the Detector's own answer; ``detect_with_candidates`` decodes the same raw
output once with a low floor and splits it at ``conf``. For end-to-end heads that split is
exactly the Detector's answer; for NMS heads a box under the cut can only suppress boxes
scored lower still, so the kept set is the same.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from edgefleet.shared.errors import RuntimeBackendError

from edgefleet.runtime.backend import Detection, ModelInfo
from edgefleet.runtime.postprocess import postprocess
from edgefleet.runtime.preprocess import preprocess

DEFAULT_FLOOR = 0.05  # candidates scored below this are noise, not "uncertain"
NO_CANDIDATES = 1.0  # a floor at or above the cut: detections and raw checks only


@dataclass(frozen=True)
class RawSummary:
    """What the health check needs from one frame's raw output, before any threshold:
    NaN confidences never pass the cut, so without this a broken model reads as "nothing
    in view" rather than broken."""

    nonfinite: int  # NaN / Inf values anywhere in the output tensor
    max_score: float  # highest class score (nan when there is none)


def raw_summary(output: npt.NDArray[Any], *, end2end: bool) -> RawSummary:
    """``output`` as the model gave it: (1, N, 6) end to end, else (1, 4 + nc, anchors)."""
    arr = np.asarray(output)
    if end2end and arr.ndim == 3 and arr.shape[-1] >= 5:
        scores = arr[..., 4]
    elif arr.ndim == 3 and arr.shape[1] > 4:
        scores = arr[:, 4:, :]
    else:
        scores = arr
    # Fast path, every frame: a float64 sum of float32 values cannot overflow, so it is
    # finite exactly when every value is (no mask over the whole tensor).
    if math.isfinite(float(arr.sum(dtype=np.float64))):
        return RawSummary(0, float(scores.max()) if scores.size else float("nan"))
    nonfinite = int(arr.size - int(np.isfinite(arr).sum()))
    kept = scores[np.isfinite(scores)]
    return RawSummary(nonfinite, float(kept.max()) if kept.size else float("nan"))


class CandidateDetector:
    def __init__(self, inner: Any, floor: float = DEFAULT_FLOOR) -> None:
        self.inner = inner
        self.floor = floor

    @property
    def info(self) -> ModelInfo:
        info: ModelInfo = self.inner.info
        return info

    def detect(self, bgr: npt.NDArray[np.uint8]) -> list[Detection]:
        dets: list[Detection] = self.inner.detect(bgr)
        return dets

    def warm_up(self) -> None:
        self.inner.warm_up()

    def close(self) -> None:
        self.inner.close()

    def __getattr__(self, name: str) -> Any:  # anything else the runtime's detector offers
        return getattr(self.inner, name)

    def _can_split(self) -> bool:
        return all(hasattr(self.inner, a) for a in ("backend", "conf", "iou"))

    def detect_with_candidates(
        self, bgr: npt.NDArray[np.uint8]
    ) -> tuple[list[Detection], list[Detection]]:
        """(detections above ``conf`` as ``detect`` gives them, candidates in [floor, conf])."""
        kept, below, _ = self.detect_raw(bgr)
        return kept, below

    def detect_raw(
        self, bgr: npt.NDArray[np.uint8]
    ) -> tuple[list[Detection], list[Detection], RawSummary | None]:
        """Detections, candidates, and a summary of the raw output (one inference)."""
        if not self._can_split():
            return self.detect(bgr), [], None
        if bgr.ndim != 3 or bgr.shape[2] != 3 or bgr.dtype != np.uint8:
            raise RuntimeBackendError(f"expected an HxWx3 uint8 BGR image, got {bgr.shape}")
        info = self.info
        outputs = self.inner.backend.run(preprocess(bgr, info.imgsz))
        rows = postprocess(
            outputs[0], end2end=info.end2end, nc=len(info.names), input_shape=info.imgsz,
            orig_shape=(int(bgr.shape[0]), int(bgr.shape[1])),
            conf=min(self.floor, self.inner.conf), iou=self.inner.iou,
        )  # fmt: skip
        kept: list[Detection] = []
        below: list[Detection] = []
        for r in rows.tolist():
            d = _detection(r, info.names)
            (kept if d.confidence > self.inner.conf else below).append(d)
        return kept, below, raw_summary(outputs[0], end2end=info.end2end)


def _detection(row: list[float], names: dict[int, str]) -> Detection:
    k = int(row[5])
    return Detection(k, names.get(k, str(k)), row[4], (row[0], row[1], row[2], row[3]))


def with_candidates(
    loader: Callable[[Path], Any], floor: float = DEFAULT_FLOOR
) -> Callable[[Path], Any]:
    """A model loader whose detectors also report their below-the-cut candidates."""

    def load(path: Path) -> CandidateDetector:
        return CandidateDetector(loader(path), floor)

    return load
