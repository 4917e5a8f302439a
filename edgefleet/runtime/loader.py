"""The agent's model loader: which backend runs a verified ONNX on this device.

Runs in the reconcile thread during PREPARING / WARMING, before the swap, so an engine
build (seconds to minutes on a Jetson) never stalls the frame loop. The decision is
``engine_cache.plan_engine`` (pure); this shell does the build and the loading:

* native TensorRT in the profile and on the device: a cached engine, or one built now from
  the ONNX and cached under its key; if that fails, ONNX Runtime instead (logged);
* otherwise ONNX Runtime with the execution providers the profile asks for and this build
  of onnxruntime has (TensorRT EP engines cached under the same folder);
* a ``.plan`` the controller chose for this device (a prebuilt plan whose fingerprint fits)
  runs on native TensorRT directly, with the model info stored beside it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgefleet.runtime.detector import Detector
from edgefleet.runtime.engine_cache import (
    PLAN_SUFFIX,
    Action,
    EngineKey,
    GpuFacts,
    build_engine,
    cached_plans,
    plan_engine,
)
from edgefleet.runtime.foreground import Foreground
from edgefleet.shared.errors import ArtifactError, RuntimeBackendError
from edgefleet.shared.hashing import sha256_file
from edgefleet.shared.profiles import FirmwareProfile

log = logging.getLogger(__name__)

CPU_BACKENDS = ("onnxruntime-cpu",)


@dataclass(frozen=True)
class LoaderSettings:
    conf: float
    iou: float
    engine_dir: Path  # data_dir/engines: TensorRT plans and TensorRT EP caches
    profile: FirmwareProfile | None
    gpu: GpuFacts


def backend_label(settings: LoaderSettings, available: list[str]) -> str:
    """What /metrics calls the backend: the profile backend ONNX Runtime will really use."""
    from edgefleet.runtime.onnx_backend import PROVIDER_FOR, providers_for

    backends = settings.profile.backends if settings.profile else list(CPU_BACKENDS)
    first = providers_for(backends, available)[0]
    return str(next(b for b, p in PROVIDER_FOR.items() if p == first))


def make_loader(
    settings: LoaderSettings,
    on_built: Callable[[Path, EngineKey], None] | None = None,
    foreground: Foreground | None = None,
) -> Callable[[Path], Detector]:
    """``on_built(plan, key)`` is told of each engine built here (to share it);
    ``foreground``: the frame loop that a model's background preparation gives way to."""
    import onnxruntime as ort

    from edgefleet.runtime.onnx_backend import (
        OnnxRuntimeBackend,
        provider_options_for,
        providers_for,
    )

    profile = settings.profile
    backends = list(profile.backends) if profile else list(CPU_BACKENDS)
    precision = profile.precision if profile else "fp32"
    workspace_mb = profile.workspace_mb if profile else 1024
    providers = providers_for(backends, ort.get_available_providers())
    options = provider_options_for(precision, settings.engine_dir)

    def onnxruntime(path: Path) -> Detector:
        # background: another model serves frames meanwhile (see onnx_backend's doc)
        backend = OnnxRuntimeBackend(
            providers, provider_options=options, background=True, foreground=foreground
        )
        return Detector.from_backend(backend, path, conf=settings.conf, iou=settings.iou)

    def load(path: Path) -> Detector:
        if path.suffix == PLAN_SUFFIX:  # the controller chose a prebuilt plan for this device
            return _prebuilt(path, settings)
        choice = plan_engine(
            sha256_file(path), backends=backends, precision=precision, gpu=settings.gpu,
            cached=cached_plans(settings.engine_dir),
        )  # fmt: skip
        if choice.action is Action.ONNXRUNTIME or choice.key is None:
            return onnxruntime(path)
        try:  # pragma: no cover - needs a GPU with TensorRT
            return _native(
                path, choice.action, choice.key, settings,
                workspace_mb=workspace_mb, onnxruntime=onnxruntime, on_built=on_built,
            )  # fmt: skip
        except (RuntimeBackendError, ArtifactError) as e:  # pragma: no cover
            log.warning("native TensorRT unusable (%s): running on onnxruntime", e.reason)
            return onnxruntime(path)

    return load


def _prebuilt(path: Path, settings: LoaderSettings) -> Detector:
    """A signed plan, verified and stored with its model info; no ONNX Runtime fallback:
    a plan that does not load here fails the install, and the old model keeps serving."""
    from edgefleet.runtime.tensorrt_backend import TensorRTBackend

    return Detector.from_backend(TensorRTBackend(), path, conf=settings.conf, iou=settings.iou)


def _native(  # pragma: no cover - needs a GPU with TensorRT
    path: Path,
    action: Action,
    key: EngineKey,
    settings: LoaderSettings,
    *,
    workspace_mb: int,
    onnxruntime: Callable[[Path], Detector],
    on_built: Callable[[Path, EngineKey], None] | None,
) -> Detector:
    from edgefleet.runtime.tensorrt_backend import TensorRTBackend

    plan = settings.engine_dir / key.filename
    if action is Action.BUILD:
        log.info("building a TensorRT engine for %s (%s)", path.name, key.filename)
        with onnxruntime(path) as reference:  # the plan's ModelInfo comes from the ONNX
            info = reference.info
        settings.engine_dir.mkdir(parents=True, exist_ok=True)
        plan = build_engine(path, key, settings.engine_dir, info, workspace_mb=workspace_mb)
        if on_built is not None:
            on_built(plan, key)
    return Detector.from_backend(TensorRTBackend(), plan, conf=settings.conf, iou=settings.iou)
