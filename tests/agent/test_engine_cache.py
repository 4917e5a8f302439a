"""Artifact and engine planning (pure, everywhere) and the GPU paths (marked ``gpu``)."""

from __future__ import annotations

from pathlib import Path

import cv2
import onnxruntime as ort
import pytest
from edgefleet.shared.errors import RuntimeBackendError
from edgefleet.shared.profiles import load_profiles

from edgefleet.runtime.backend import ModelInfo
from edgefleet.runtime.detector import Detector
from edgefleet.runtime.engine_cache import (
    Action,
    EngineKey,
    GpuFacts,
    PlanArtifact,
    cached_plans,
    plan_engine,
    read_info,
    write_info,
)
from edgefleet.runtime.onnx_backend import provider_options_for, providers_for

REPO = Path(__file__).resolve().parents[2]
PROFILES = load_profiles(REPO / "firmware_profiles")
V2 = REPO / "models" / "shapes" / "v2" / "model.onnx"
ONNX_SHA = "ab" * 32
ORIN = GpuFacts(tensorrt="8.6.2", compute_capability="8.7")
TRT_BACKENDS = ["tensorrt", "onnxruntime-trt", "onnxruntime-cuda", "onnxruntime-cpu"]


def plan(cc: str = "8.7", trt: str = "8.6.2", precision: str = "fp16") -> PlanArtifact:
    return PlanArtifact(f"models/m/v1/sm{cc}.plan", "cd" * 32, ONNX_SHA, trt, cc, precision)


def test_key_changes_with_each_of_its_four_parts():
    base = EngineKey(ONNX_SHA, "10.3.0", "8.9", "fp16")
    others = [
        EngineKey("ef" * 32, "10.3.0", "8.9", "fp16"),
        EngineKey(ONNX_SHA, "10.4.0", "8.9", "fp16"),
        EngineKey(ONNX_SHA, "10.3.0", "7.5", "fp16"),
        EngineKey(ONNX_SHA, "10.3.0", "8.9", "fp32"),
    ]
    assert len({base.filename, *(k.filename for k in others)}) == 5
    assert base.filename == EngineKey(ONNX_SHA, "10.3.0", "8.9", "fp16").filename
    assert base.filename.startswith("abababababab-trt10.3.0-sm89-fp16-")
    assert base.filename.endswith(".plan")


def test_a_matching_prebuilt_plan_wins():
    chosen = plan_engine(
        ONNX_SHA, backends=TRT_BACKENDS, precision="fp16", gpu=ORIN,
        prebuilt=[plan(cc="7.2"), plan(trt="10.0.1"), plan(precision="fp32"), plan()],
    )  # fmt: skip
    assert chosen.action is Action.PREBUILT
    assert chosen.artifact == plan()


def test_a_plan_fits_only_the_tensorrt_release_it_names():
    for trt in ("8.6", "8.6.2"):
        ok = plan_engine(
            ONNX_SHA, backends=TRT_BACKENDS, precision="fp16", gpu=ORIN, prebuilt=[plan(trt=trt)]
        )
        assert ok.action is Action.PREBUILT, trt
    for trt in ("8.6.1", "8.5.2"):
        other = plan_engine(
            ONNX_SHA, backends=TRT_BACKENDS, precision="fp16", gpu=ORIN, prebuilt=[plan(trt=trt)]
        )
        assert other.action is Action.BUILD, trt


def test_no_plan_fits_build_then_use_the_cache():
    first = plan_engine(ONNX_SHA, backends=TRT_BACKENDS, precision="fp16", gpu=ORIN)
    assert first.action is Action.BUILD
    assert first.key == EngineKey(ONNX_SHA, "8.6.2", "8.7", "fp16")
    again = plan_engine(
        ONNX_SHA, backends=TRT_BACKENDS, precision="fp16", gpu=ORIN, cached={first.key.filename}
    )
    assert again.action is Action.CACHED


@pytest.mark.parametrize(
    ("backends", "gpu"),
    [
        (["onnxruntime-cpu"], GpuFacts()),
        (["onnxruntime-cuda", "onnxruntime-cpu"], ORIN),  # profile without native TensorRT
        (TRT_BACKENDS, GpuFacts(tensorrt=None, compute_capability="8.7")),  # module missing
        (TRT_BACKENDS, GpuFacts(tensorrt="10.3.0", compute_capability=None)),  # no GPU seen
    ],
)
def test_onnxruntime_when_native_tensorrt_cannot_run(backends, gpu):
    chosen = plan_engine(ONNX_SHA, backends=backends, precision="fp16", gpu=gpu, prebuilt=[plan()])
    assert chosen.action is Action.ONNXRUNTIME
    assert chosen.reason


def test_only_complete_builds_count_as_cached(tmp_path: Path):
    info = ModelInfo(imgsz=(160, 192), names={0: "a", 1: "b"}, end2end=True)
    done, half = tmp_path / "done.plan", tmp_path / "half.plan"
    done.write_bytes(b"plan")
    write_info(done, info)
    half.write_bytes(b"plan")  # the build was cut off before its info was written
    assert cached_plans(tmp_path) == {"done.plan"}
    assert cached_plans(tmp_path / "none") == set()
    assert read_info(done) == ModelInfo(imgsz=(160, 192), names={0: "a", 1: "b"}, end2end=True)
    with pytest.raises(RuntimeBackendError):
        read_info(half)


@pytest.mark.parametrize(
    ("backends", "available", "want"),
    [
        (TRT_BACKENDS, ["CPUExecutionProvider"], ["CPUExecutionProvider"]),
        (
            TRT_BACKENDS,
            ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
            ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
        ),
        (
            ["onnxruntime-cuda", "onnxruntime-cpu"],
            ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
            ["CUDAExecutionProvider", "CPUExecutionProvider"],
        ),
        (["tensorrt"], ["CUDAExecutionProvider", "CPUExecutionProvider"], ["CPUExecutionProvider"]),
    ],
)
def test_providers_follow_the_profile_and_what_onnxruntime_has(backends, available, want):
    assert providers_for(backends, available) == want


def test_tensorrt_provider_options_follow_the_precision(tmp_path: Path):
    opts = provider_options_for("fp16", tmp_path)["TensorrtExecutionProvider"]
    assert opts == {
        "trt_fp16_enable": "True",
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": str(tmp_path),
    }
    assert provider_options_for("fp32", None)["TensorrtExecutionProvider"] == {
        "trt_fp16_enable": "False"
    }


def test_every_profile_loads_a_model_with_what_this_machine_has(tmp_path: Path):
    """On this machine (CPU-only onnxruntime) every profile ends up on a provider it has."""
    available = ort.get_available_providers()
    for profile in PROFILES.values():
        providers = providers_for(profile.backends, available)
        det = Detector.from_onnx(
            V2,
            providers=providers,
            provider_options=provider_options_for(profile.precision, tmp_path),
        )
        det.close()
        assert set(providers) <= set(available), profile.name


@pytest.mark.gpu
def test_build_engine_and_native_tensorrt_match_onnxruntime(tmp_path: Path):
    pytest.importorskip("tensorrt", reason="needs TensorRT (NVIDIA GPU machines only)")
    pytest.importorskip("pycuda.driver", reason="needs pycuda (the 'gpu' extra)")
    import tensorrt as trt
    from edgefleet.shared.hashing import sha256_file

    from edgefleet.runtime.engine_cache import build_engine
    from edgefleet.runtime.tensorrt_backend import TensorRTBackend

    onnx_det = Detector.from_onnx(V2)
    key = EngineKey(sha256_file(V2), trt.__version__, "0.0", "fp32")
    path = build_engine(V2, key, tmp_path, onnx_det.info, workspace_mb=512)
    trt_det = Detector.from_backend(TensorRTBackend(), path)
    try:
        for img_path in sorted((REPO / "models" / "samples").glob("*.jpg")):
            img = cv2.imread(str(img_path))
            a, b = onnx_det.detect(img), trt_det.detect(img)
            assert [d.class_id for d in a] == [d.class_id for d in b]
            for x, y in zip(a, b, strict=True):
                assert abs(x.confidence - y.confidence) < 1e-2
    finally:
        trt_det.close()
        onnx_det.close()


def test_tensorrt_backend_without_tensorrt_is_one_clear_error(tmp_path: Path):
    pytest.importorskip("onnxruntime")
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("tensorrt is installed here: the missing-module path cannot be shown")
    from edgefleet.runtime.tensorrt_backend import TensorRTBackend

    plan_path = tmp_path / "m.plan"
    plan_path.write_bytes(b"not a plan")
    write_info(plan_path, ModelInfo(imgsz=(160, 160), names={0: "a"}))
    with pytest.raises(RuntimeBackendError, match="needs tensorrt and pycuda"):
        TensorRTBackend().load(plan_path)


def test_the_loader_runs_a_prebuilt_plan_natively_and_an_onnx_on_what_it_can(tmp_path: Path):
    """A ``.plan`` the controller chose goes to native TensorRT, with no ONNX Runtime
    fallback (here, without TensorRT: one clear error, so the install fails and the old
    model serves); an ONNX on the same Orin profile falls back to onnxruntime."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("tensorrt is installed here: the missing-module path cannot be shown")
    from edgefleet.runtime.loader import LoaderSettings, make_loader

    settings = LoaderSettings(conf=0.25, iou=0.7, engine_dir=tmp_path / "engines",
                              profile=PROFILES["jetson-orin-nano-8gb-jp6"], gpu=ORIN)  # fmt: skip
    load = make_loader(settings)
    plan_path = tmp_path / f"{'cd' * 32}.plan"
    plan_path.write_bytes(b"engine bytes")
    write_info(plan_path, ModelInfo(imgsz=(160, 160), names={0: "a"}))
    with pytest.raises(RuntimeBackendError, match="needs tensorrt and pycuda"):
        load(plan_path)
    det = load(V2)
    try:
        assert det.info.imgsz == (160, 160)
    finally:
        det.close()
