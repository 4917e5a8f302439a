"""TensorRT plans: when one fits a device, and what its signed target says about it.

One rule for the controller (which plan to list for a device), the agent's install policy
(whether to accept the plan it was given) and the agent's engine cache (whether a plan on
disk can be reused): a plan runs only on the GPU architecture, the TensorRT release and the
precision it was built for. TensorRT does not promise that a serialized engine loads on any
other release, so the device's version must start with every part the plan's names:
a plan for "10.3.0" fits 10.3.0 and 10.3.0.30, not 10.3.1; a plan for "10.3" fits any 10.3.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

PRECISIONS = ("fp32", "fp16", "int8")
_VERSION = re.compile(r"^v?(\d+(?:\.\d+)*)")
_CAPABILITY = re.compile(r"^\d{1,2}\.\d$")


def parse_version(text: str) -> tuple[int, ...]:
    """Leading numeric part of a version ("10.3.0.26", "v1.2rc1" -> (1, 2)); () if none."""
    m = _VERSION.match(text.strip())
    return tuple(int(p) for p in m.group(1).split(".")) if m else ()


def tensorrt_fits(plan: str, device: str | None) -> bool:
    want, have = parse_version(plan), parse_version(device or "")
    return bool(want) and have[: len(want)] == want


@dataclass(frozen=True)
class EngineFingerprint:
    """What a plan was built for: the ``fingerprint`` in its TUF target's custom data."""

    compute_capability: str  # "8.7"
    tensorrt: str  # "10.3.0"
    precision: str  # fp32 | fp16 | int8
    onnx_sha256: str | None = None  # the ONNX it was built from, when known

    def problems(self) -> list[str]:
        out = []
        if not _CAPABILITY.match(self.compute_capability):
            out.append(f"compute capability {self.compute_capability!r} is not like 8.7")
        if len(parse_version(self.tensorrt)) < 2:
            out.append(f"TensorRT version {self.tensorrt!r} is not like 10.3.0")
        if self.precision not in PRECISIONS:
            out.append(f"precision {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        return out

    def fits(self, compute_capability: str | None, tensorrt: str | None) -> bool:
        return compute_capability == self.compute_capability and tensorrt_fits(
            self.tensorrt, tensorrt
        )

    def slug(self) -> str:
        """For file and target names: ``sm87-trt10.3.0-fp16``."""
        return f"sm{self.compute_capability.replace('.', '')}-trt{self.tensorrt}-{self.precision}"

    def to_custom(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "compute_capability": self.compute_capability,
            "tensorrt": self.tensorrt,
            "precision": self.precision,
        }
        if self.onnx_sha256:
            out["onnx_sha256"] = self.onnx_sha256
        return out

    @classmethod
    def from_custom(cls, raw: object) -> EngineFingerprint | None:
        """None for anything incomplete: such a plan never fits a device."""
        if not isinstance(raw, Mapping):
            return None
        try:
            fp = cls(
                str(raw["compute_capability"]),
                str(raw["tensorrt"]),
                str(raw["precision"]),
                str(raw["onnx_sha256"]) if raw.get("onnx_sha256") else None,
            )
        except KeyError:
            return None
        return None if fp.problems() else fp
