"""Refuse, at push time, a model the agent could not use as a detector.

``validate_onnx`` only says the file is a well-formed graph: a classifier or a 1x10
Identity passes it. The pushed file is also run on a probe image and decoded by the agent's
own code (edgefleet/runtime/head_check.py), so a push is refused (HTTP 422, the reason in one
line) exactly when a device could not decode the model's output.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from edgefleet.shared.errors import ArtifactError

from edgefleet.runtime.head_check import ModelInfo, probe_model


class NotADetectorError(ArtifactError):
    """A valid ONNX file that the agent cannot run as a detector (HTTP 422)."""

    http_status: ClassVar[int] = 422


def check_detector(path: Path) -> ModelInfo:
    """What the model says about itself; :class:`NotADetectorError` when it is no detector."""
    try:
        return probe_model(path)
    except ArtifactError as e:
        raise NotADetectorError(e.reason) from e
