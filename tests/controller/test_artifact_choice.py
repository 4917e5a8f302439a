"""The controller gives each device a plan built for it, else the ONNX."""

from __future__ import annotations

from edgefleet.controller.artifact_choice import (
    Artifact,
    EngineFingerprint,
    choose_artifact,
)
from edgefleet.shared.protocol import Fingerprint

ONNX = Artifact("models/m/v3/model.onnx", "a" * 64, 100, "onnx")
ORIN = Fingerprint(
    arch="aarch64", platform="jetson", jetpack="36.3.0", tensorrt="8.6.2",
    compute_capability="8.7", profile="jetson-orin-nano-8gb-jp6",
)  # fmt: skip
T4 = Fingerprint(arch="x86_64", platform="cuda", tensorrt="10.3.0", compute_capability="7.5")
CPU = Fingerprint(arch="x86_64", platform="cpu")


def plan(cc: str, trt: str, precision: str = "fp16") -> Artifact:
    return Artifact(
        f"models/m/v3/sm{cc}-trt{trt}-{precision}.plan", "b" * 64, 50, "tensorrt-plan",
        EngineFingerprint(cc, trt, precision),
    )  # fmt: skip


VERSION = [ONNX, plan("8.7", "8.6"), plan("7.5", "10.3.0"), plan("7.5", "10.3.0", "fp32")]


def test_matching_plan_for_a_jetson():
    c = choose_artifact(ORIN, VERSION)
    assert c.artifact == plan("8.7", "8.6")  # a plan for "8.6" names no patch release
    # TensorRT promises nothing across releases: a plan for 8.6.1 is not one for 8.6.2.
    assert choose_artifact(ORIN, [ONNX, plan("8.7", "8.6.1")]).artifact == ONNX
    assert choose_artifact(ORIN, VERSION, native_tensorrt=False).artifact == ONNX


def test_precision_from_the_profile_decides_between_plans():
    assert choose_artifact(T4, VERSION, precision="fp32").artifact == plan("7.5", "10.3.0", "fp32")
    assert choose_artifact(T4, VERSION).artifact == plan("7.5", "10.3.0", "fp16")


def test_onnx_when_no_plan_fits():
    other_trt = T4.model_copy(update={"tensorrt": "10.4.0"})
    other_gpu = T4.model_copy(update={"compute_capability": "8.9"})
    no_trt = T4.model_copy(update={"tensorrt": None})
    for device in (CPU, other_trt, other_gpu, no_trt):
        c = choose_artifact(device, VERSION)
        assert c.artifact == ONNX, device
        assert c.reason == "no plan fits this device"
    assert choose_artifact(ORIN, [ONNX]).reason == "ONNX"
    assert choose_artifact(ORIN, VERSION, precision="int8").artifact == ONNX


def test_nothing_to_run():
    c = choose_artifact(CPU, [plan("8.7", "8.6")])
    assert c.artifact is None
    assert c.reason


def test_fingerprint_from_tuf_custom():
    raw = {"compute_capability": "8.7", "tensorrt": "8.6.2", "precision": "fp16"}
    assert EngineFingerprint.from_custom(raw) == EngineFingerprint("8.7", "8.6.2", "fp16")
    assert EngineFingerprint.from_custom(None) is None
    assert EngineFingerprint.from_custom({"tensorrt": "8.6"}) is None
    assert EngineFingerprint.from_custom({**raw, "precision": "fp64"}) is None
