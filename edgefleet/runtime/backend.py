"""The inference seam: a backend turns a prepared tensor into raw model outputs.

Pre-processing (letterbox) and post-processing (decode, NMS, scale back) are shared by every
backend and live in ``preprocess.py`` / ``postprocess.py``; :class:`~.detector.Detector`
composes them. Test doubles implement this same protocol.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class Detection:
    class_id: int
    class_name: str
    confidence: float
    box_xyxy: tuple[float, float, float, float]  # pixels of the original image

    def to_json(self) -> dict[str, object]:
        return {
            "class_id": self.class_id,
            "class_name": self.class_name,
            "confidence": round(self.confidence, 6),
            "box_xyxy": [round(v, 3) for v in self.box_xyxy],
        }


@dataclass(frozen=True)
class ModelInfo:
    """What the exported model says about itself (Ultralytics ONNX metadata)."""

    imgsz: tuple[int, int]  # (height, width) of the network input
    names: dict[int, str]
    stride: int = 32
    end2end: bool = False  # output already decoded and de-duplicated (YOLO26 nms=False)
    task: str = "detect"
    extra: dict[str, str] = field(default_factory=dict)


class InferenceBackend(Protocol):
    """load -> warm_up -> run* -> close."""

    name: str

    def load(self, path: Path) -> ModelInfo: ...

    def warm_up(self, runs: int = 2) -> None: ...

    def run(self, tensor: npt.NDArray[np.float32]) -> list[npt.NDArray[np.float32]]: ...

    def close(self) -> None: ...
