"""Which artifact of a model version a device gets: a prebuilt TensorRT plan that fits it,
else the portable ONNX. Pure: no database, no TUF, no clock.

A plan fits when the device runs native TensorRT (its profile lists the ``tensorrt``
backend), has a GPU of the same compute capability, the TensorRT release the plan was built
with (``shared.engines.tensorrt_fits``, the rule the agent's install policy applies too),
and, when its profile says which, the same precision. Among fitting plans the one with the
device's precision wins, then fp16 over fp32, then the target path, so the choice is the
same on every controller replica.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from edgefleet.shared.engines import EngineFingerprint
from edgefleet.shared.protocol import Fingerprint

ONNX = "onnx"
PLAN = "tensorrt-plan"
GPU_PLATFORMS = frozenset({"jetson", "cuda"})
_PRECISION_ORDER = {"int8": 0, "fp16": 1, "fp32": 2}

__all__ = ["ONNX", "PLAN", "Artifact", "Choice", "EngineFingerprint", "choose_artifact"]


@dataclass(frozen=True)
class Artifact:
    target: str  # TUF target path
    sha256: str
    length: int  # bytes
    format: str  # onnx | tensorrt-plan
    fingerprint: EngineFingerprint | None = None


@dataclass(frozen=True)
class Choice:
    artifact: Artifact | None  # None: nothing this device can run
    reason: str


def plan_fits(fp: EngineFingerprint, device: Fingerprint, precision: str | None) -> bool:
    if device.platform not in GPU_PLATFORMS:
        return False
    if not fp.fits(device.compute_capability, device.tensorrt):
        return False
    return precision is None or fp.precision == precision


def choose_artifact(
    device: Fingerprint,
    artifacts: Sequence[Artifact],
    *,
    precision: str | None = None,
    native_tensorrt: bool = True,
) -> Choice:
    """The artifact of one version for ``device``; ``precision`` and ``native_tensorrt``
    (the profile lists the ``tensorrt`` backend) come from its firmware profile."""
    plans = [
        a for a in artifacts
        if native_tensorrt and a.format == PLAN and a.fingerprint
        and plan_fits(a.fingerprint, device, precision)
    ]  # fmt: skip
    if plans:
        best = min(plans, key=lambda a: (_precision_rank(a), a.target))
        assert best.fingerprint is not None
        return Choice(best, f"TensorRT plan for sm {best.fingerprint.compute_capability}")
    onnx = sorted((a for a in artifacts if a.format == ONNX), key=lambda a: a.target)
    if onnx:
        why = "no plan fits this device" if any(a.format == PLAN for a in artifacts) else "ONNX"
        return Choice(onnx[0], why)
    return Choice(None, "no ONNX and no plan that fits this device")


def _precision_rank(a: Artifact) -> int:
    return _PRECISION_ORDER.get(a.fingerprint.precision if a.fingerprint else "", 9)
