"""Which artifact runs, and which TensorRT engine to build: pure planning, plus the build.

A TensorRT plan runs only on the GPU architecture and TensorRT version it was built with,
at the precision it was built for; its cache key is all four of them together with the
ONNX it came from. :func:`plan_engine` decides, with no I/O, between:

* ``prebuilt``: a signed plan from the controller whose fingerprint matches this device;
* ``cached``: a plan this device (or one of its kind) built earlier, found by key;
* ``build``: build one from the ONNX before the swap, then cache it under the key;
* ``onnxruntime``: no native TensorRT here (CPU box, profile without it, no tensorrt module):
  the ONNX runs on onnxruntime with the providers the profile names.

:func:`build_engine` needs a GPU and the ``tensorrt`` module, imported only when it runs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path

from edgefleet.runtime.backend import ModelInfo
from edgefleet.runtime.metadata import info_document, info_from_document
from edgefleet.shared.durable import write_bytes
from edgefleet.shared.engines import tensorrt_fits
from edgefleet.shared.errors import ArtifactError, RuntimeBackendError

PLAN_SUFFIX = ".plan"
INFO_SUFFIX = ".json"  # beside each plan: the ModelInfo a plan cannot carry itself


@dataclass(frozen=True)
class EngineKey:
    onnx_sha256: str
    tensorrt: str  # TensorRT version, "10.3.0"
    compute_capability: str  # "8.7"
    precision: str  # fp32 | fp16 | int8

    @property
    def digest(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def filename(self) -> str:
        """Readable and unique: what it is for, then the key's own digest."""
        cc = self.compute_capability.replace(".", "")
        short = f"{self.onnx_sha256[:12]}-trt{self.tensorrt}-sm{cc}-{self.precision}"
        return f"{short}-{self.digest[:12]}{PLAN_SUFFIX}"


@dataclass(frozen=True)
class PlanArtifact:
    """A prebuilt plan the controller offers, with the fingerprint it was built for."""

    target_path: str
    sha256: str
    onnx_sha256: str
    tensorrt: str
    compute_capability: str
    precision: str

    def key(self) -> EngineKey:
        return EngineKey(self.onnx_sha256, self.tensorrt, self.compute_capability, self.precision)


@dataclass(frozen=True)
class GpuFacts:
    """This device's GPU as TensorRT sees it; None fields when there is no GPU."""

    tensorrt: str | None = None
    compute_capability: str | None = None


class Action(str, Enum):
    PREBUILT = "prebuilt"
    CACHED = "cached"
    BUILD = "build"
    ONNXRUNTIME = "onnxruntime"


@dataclass(frozen=True)
class EnginePlan:
    action: Action
    key: EngineKey | None = None
    artifact: PlanArtifact | None = None  # for PREBUILT
    reason: str = ""


def plan_engine(
    onnx_sha256: str,
    *,
    backends: Sequence[str],
    precision: str,
    gpu: GpuFacts,
    prebuilt: Sequence[PlanArtifact] = (),
    cached: Collection[str] = (),
) -> EnginePlan:
    """What to run for one ONNX on this device; ``cached`` are the plan file names on disk."""
    if "tensorrt" not in backends:
        return EnginePlan(Action.ONNXRUNTIME, reason="the profile has no native TensorRT")
    if gpu.tensorrt is None or gpu.compute_capability is None:
        return EnginePlan(Action.ONNXRUNTIME, reason="no TensorRT or no GPU on this device")
    key = EngineKey(onnx_sha256, gpu.tensorrt, gpu.compute_capability, precision)
    for a in prebuilt:
        if (
            a.onnx_sha256 == onnx_sha256
            and a.compute_capability == gpu.compute_capability
            and a.precision == precision
            and tensorrt_fits(a.tensorrt, gpu.tensorrt)
        ):
            return EnginePlan(Action.PREBUILT, key=key, artifact=a, reason="a signed plan fits")
    if key.filename in cached:
        return EnginePlan(Action.CACHED, key=key, reason="built here before")
    return EnginePlan(Action.BUILD, key=key, reason="no plan fits this device: build one")


def cached_plans(cache_dir: Path) -> set[str]:
    """Plan names in the cache that have their ModelInfo beside them (complete builds)."""
    if not cache_dir.is_dir():
        return set()
    return {
        p.name for p in cache_dir.glob(f"*{PLAN_SUFFIX}") if p.with_suffix(INFO_SUFFIX).is_file()
    }


def write_info(plan_path: Path, info: ModelInfo) -> None:
    doc = info_document(info)
    write_bytes(plan_path.with_suffix(INFO_SUFFIX), json.dumps(doc, sort_keys=True).encode())


def read_info(plan_path: Path) -> ModelInfo:
    try:
        doc = json.loads(plan_path.with_suffix(INFO_SUFFIX).read_text(encoding="utf-8"))
        return info_from_document(doc)
    except (OSError, ValueError, ArtifactError) as e:
        why = e.reason if isinstance(e, ArtifactError) else str(e)
        raise RuntimeBackendError(f"plan {plan_path.name} has no readable model info: {why}") from e


def build_engine(
    onnx_path: Path, key: EngineKey, cache_dir: Path, info: ModelInfo, *, workspace_mb: int
) -> Path:  # pragma: no cover - needs a GPU and TensorRT
    """Build a serialized TensorRT engine from ONNX (FP16 if the key says so), durably.

    Blocking and slow (seconds to minutes): call it from the reconcile thread in PREPARING,
    never from the frame loop. The plan and its ModelInfo are written only once complete.
    """
    try:
        import tensorrt as trt
    except ImportError as e:
        raise RuntimeBackendError("building an engine needs the tensorrt module") from e
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = (
        0
        if int(trt.__version__.split(".")[0]) >= 10
        else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    )
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeBackendError(f"TensorRT cannot parse {onnx_path.name}: {errors[:300]}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    if key.precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeBackendError(f"TensorRT could not build an engine for {onnx_path.name}")
    plan = cache_dir / key.filename
    write_bytes(plan, bytes(serialized))
    write_info(plan, info)  # last: a plan without its info is not a complete build
    return plan
