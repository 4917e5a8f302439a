"""Detector: letterbox -> backend -> decode, giving what ``YOLO(...).predict()`` gives."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from edgefleet.runtime.backend import Detection, InferenceBackend, ModelInfo
from edgefleet.runtime.postprocess import postprocess
from edgefleet.runtime.preprocess import preprocess
from edgefleet.shared.errors import RuntimeBackendError


class Detector:
    def __init__(
        self, backend: InferenceBackend, info: ModelInfo, conf: float = 0.25, iou: float = 0.7
    ) -> None:
        self.backend = backend
        self.info = info
        self.conf = conf  # keep detections with score strictly above this
        self.iou = iou  # NMS IoU threshold (classic heads only)

    @classmethod
    def from_onnx(
        cls,
        path: str | Path,
        conf: float = 0.25,
        iou: float = 0.7,
        providers: Sequence[str] | None = None,
        provider_options: Mapping[str, Mapping[str, str]] | None = None,
    ) -> Detector:
        from edgefleet.runtime.onnx_backend import OnnxRuntimeBackend

        backend = OnnxRuntimeBackend(providers=providers, provider_options=provider_options)
        return cls.from_backend(backend, path, conf=conf, iou=iou)

    @classmethod
    def from_backend(
        cls, backend: InferenceBackend, path: str | Path, conf: float = 0.25, iou: float = 0.7
    ) -> Detector:
        """Any backend (ONNX Runtime, native TensorRT, a test double) loads ``path``."""
        info = backend.load(Path(path))
        return cls(backend, info, conf=conf, iou=iou)

    @property
    def cpu_only(self) -> bool:
        """Only the CPU runs this model (slots.py warms it up between frames)."""
        return bool(getattr(self.backend, "cpu_only", False))

    def warm_up(self, runs: int = 2) -> None:
        self.backend.warm_up(runs)

    def detect(self, image_bgr: npt.NDArray[np.uint8]) -> list[Detection]:
        if image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or image_bgr.dtype != np.uint8:
            raise RuntimeBackendError(
                f"expected an HxWx3 uint8 BGR image, got {image_bgr.shape} {image_bgr.dtype}"
            )
        orig_shape = (int(image_bgr.shape[0]), int(image_bgr.shape[1]))
        outputs = self.backend.run(preprocess(image_bgr, self.info.imgsz))
        rows = postprocess(
            outputs[0],
            end2end=self.info.end2end,
            nc=len(self.info.names),
            input_shape=self.info.imgsz,
            orig_shape=orig_shape,
            conf=self.conf,
            iou=self.iou,
        )
        return [self._detection(r) for r in rows.tolist()]  # tolist: one C call, not 6 per row

    def _detection(self, row: list[float]) -> Detection:
        class_id = int(row[5])
        name = self.info.names.get(class_id, str(class_id))
        box = (row[0], row[1], row[2], row[3])
        return Detection(class_id=class_id, class_name=name, confidence=row[4], box_xyxy=box)

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> Detector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
