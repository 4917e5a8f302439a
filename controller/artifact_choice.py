"""Which artifact of a model version a device gets: a prebuilt TensorRT plan that fits it,
else the portable ONNX. Pure: no database, no TUF, no clock.

A plan fits when the device reports a GPU with the same compute capability, the same
TensorRT major.minor (plans are not portable across minor releases; patch releases share
them, the same rule the agent applies in ``agent/runtime/engine_cache.same_tensorrt``), and,
when the device's profile says which, the same precision. Among fitting plans the one with
the device's precision wins, then fp16 over fp32, then the target path, so the choice is
the same on every controller replica.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from edgefleet.shared.protocol import Fingerprint

ONNX = "onnx"
PLAN = "tensorrt-plan"
GPU_PLATFORMS = frozenset({"jetson", "cuda"})
_PRECISION_ORDER = {"int8": 0, "fp16": 1, "fp32": 2}


@dataclass(frozen=True)
class EngineFingerprint:
    """What a plan was built for (the TUF target's ``custom["fingerprint"]``)."""

    compute_capability: str  # "8.7"
    tensorrt: str  # "10.3.0"
    precision: str  # fp32 | fp16 | int8

    @classmethod
    def from_custom(cls, raw: Mapping[str, Any] | None) -> EngineFingerprint | None:
        if not raw:
            return None
        try:
            return cls(str(raw["compute_capability"]), str(raw["tensorrt"]), str(raw["precision"]))
        except KeyError:
            return None  # an incomplete fingerprint never matches anything


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


def same_tensorrt(a: str, b: str) -> bool:
    return a.split(".")[:2] == b.split(".")[:2]


def plan_fits(fp: EngineFingerprint, device: Fingerprint, precision: str | None) -> bool:
    if device.platform not in GPU_PLATFORMS or not device.tensorrt:
        return False
    if fp.compute_capability != device.compute_capability:
        return False
    if not same_tensorrt(fp.tensorrt, device.tensorrt):
        return False
    return precision is None or fp.precision == precision


def choose_artifact(
    device: Fingerprint, artifacts: Sequence[Artifact], *, precision: str | None = None
) -> Choice:
    """The artifact of one version for ``device``; ``precision`` from its firmware profile."""
    plans = [
        a for a in artifacts
        if a.format == PLAN and a.fingerprint and plan_fits(a.fingerprint, device, precision)
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
