"""Firmware profiles: one YAML per device class in firmware_profiles/.

A profile says what a device class can run (backends in order of preference, precision,
TensorRT and compute capability when there is a GPU) so the controller can pick an artifact
and the agent can choose its execution providers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from edgefleet.shared.errors import ConfigError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

Backend = Literal["tensorrt", "onnxruntime-trt", "onnxruntime-cuda", "onnxruntime-cpu"]


class FirmwareProfile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str
    arch: Literal["x86_64", "aarch64"]
    platform: Literal["cpu", "jetson", "cuda"]
    jetpack: str | None = None
    cuda: str | None = None
    tensorrt: str | None = None
    compute_capability: str | None = None  # "8.7"
    python: str = "3.10"
    backends: list[Backend] = Field(min_length=1)  # in order of preference
    precision: Literal["fp32", "fp16", "int8"] = "fp32"
    memory_mb: int = Field(gt=0)  # shared CPU/GPU memory on Jetson
    workspace_mb: int = Field(default=1024, gt=0)  # TensorRT builder workspace


def load_profile(path: str | Path) -> FirmwareProfile:
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
        return FirmwareProfile.model_validate(data)
    except OSError as e:
        raise ConfigError(f"cannot read profile {p}: {e.strerror}") from e
    except (yaml.YAMLError, ValidationError) as e:
        raise ConfigError(f"invalid profile {p.name}: {e}") from e


def load_profiles(folder: str | Path) -> dict[str, FirmwareProfile]:
    profiles = [load_profile(p) for p in sorted(Path(folder).glob("*.yaml"))]
    return {p.name: p for p in profiles}


def shipped_profiles_dir() -> Path:
    """The profiles shipped with edgefleet (firmware_profiles/, installed as a package)."""
    import edgefleet.firmware_profiles

    return Path(edgefleet.firmware_profiles.__file__).resolve().parent
