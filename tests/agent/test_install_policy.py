"""install_policy.decide: every refusal, and the accept path. Pure: no disk, no network."""

from __future__ import annotations

from typing import Any

import pytest
from edgefleet.agent.install_policy import decide, parse_version
from edgefleet.shared.protocol import Fingerprint
from tuf.api.metadata import TargetFile

PATH = "models/yolo/v3/model.onnx"
SHA = "ab" * 32
PLAN_FP = {"compute_capability": "8.7", "tensorrt": "10.3", "precision": "fp16"}
ORIN = Fingerprint(
    arch="aarch64", platform="jetson", tensorrt="10.3.0.30", compute_capability="8.7"
)


def image_target(**custom: Any) -> TargetFile:
    fields = {
        "model": "yolo",
        "version": "v3",
        "release": 3,
        "format": "onnx",
        "fingerprint": None,
        "min_agent_version": "0.1.0",
        "card_sha256": None,
    }
    fields.update(custom)
    return TargetFile(1000, {"sha256": SHA}, PATH, {"custom": fields})


def director_target(
    length: int = 1000, hashes: dict[str, str] | None = None, **custom: Any
) -> TargetFile:
    fields = {"model": "yolo", "version": "v3", "release": 3, **custom}
    return TargetFile(length, hashes or {"sha256": SHA}, PATH, {"custom": fields})


def judge(
    director: TargetFile | None = None,
    image: TargetFile | None = None,
    installed: dict[str, int] | None = None,
    fingerprint: Fingerprint | None = None,
    agent_version: str = "0.1.0",
) -> str:
    decision = decide(
        director or director_target(),
        image or image_target(),
        installed or {},
        fingerprint,
        agent_version,
    )
    assert decision.accepted == (decision.reason == "")
    return decision.reason


def test_accepts_when_everything_agrees() -> None:
    decision = decide(director_target(), image_target(), {"yolo": 2}, None, "0.1.0")
    assert decision.accepted
    target = decision.target
    assert target is not None
    assert (target.model, target.version, target.release) == ("yolo", "v3", 3)
    assert (target.target_path, target.length, target.sha256) == (PATH, 1000, SHA)
    assert target.format == "onnx"
    assert target.custom["min_agent_version"] == "0.1.0"


def test_the_directors_shadow_request_reaches_the_target() -> None:
    asked = {"frames": 5, "timeout_s": 30, "min_match_permille": 900}
    target = decide(director_target(shadow=asked), image_target(), {}, None, "0.1.0").target
    assert target is not None and target.shadow == asked
    plain = decide(director_target(), image_target(), {}, None, "0.1.0").target
    assert plain is not None and plain.shadow is None


def test_same_release_is_fine() -> None:
    assert judge(installed={"yolo": 3}) == ""


def test_other_models_releases_do_not_matter() -> None:
    assert judge(installed={"other": 99}) == ""


def test_not_in_image_repo() -> None:
    decision = decide(director_target(), None, {}, None, "0.1.0")
    assert not decision.accepted
    assert "not signed in the image repository" in decision.reason


def test_length_differs() -> None:
    assert "length differs" in judge(director=director_target(length=999))


def test_hash_differs() -> None:
    assert "sha256 differs" in judge(director=director_target(hashes={"sha256": "cd" * 32}))


def test_any_common_hash_differs() -> None:
    image = image_target()
    image.hashes["sha512"] = "11" * 64
    director = director_target(hashes={"sha256": SHA, "sha512": "22" * 64})
    assert "sha512 differs" in judge(director=director, image=image)


def test_no_common_hash_algorithm() -> None:
    reason = judge(director=director_target(hashes={"sha512": "11" * 64}))
    assert "share no hash algorithm" in reason


@pytest.mark.parametrize(("key", "value"), [("model", "other"), ("version", "v2"), ("release", 4)])
def test_director_custom_disagrees_with_image(key: str, value: Any) -> None:
    assert f"{key} differs" in judge(director=director_target(**{key: value}))


def test_malformed_image_custom() -> None:
    assert "'release' missing" in judge(image=image_target(release="3"))


def test_lower_release_refused() -> None:
    assert "lower than installed release 4" in judge(installed={"yolo": 4})


def test_unknown_format() -> None:
    assert "unknown format" in judge(image=image_target(format="pickle"))


def test_plan_fits_matching_gpu() -> None:
    image = image_target(format="tensorrt-plan", fingerprint=PLAN_FP)
    assert judge(image=image, fingerprint=ORIN) == ""


def test_plan_without_fingerprint() -> None:
    image = image_target(format="tensorrt-plan", fingerprint=None)
    assert "without a complete engine fingerprint" in judge(image=image, fingerprint=ORIN)


def test_plan_on_cpu_device() -> None:
    image = image_target(format="tensorrt-plan", fingerprint=PLAN_FP)
    cpu = Fingerprint(arch="x86_64")
    assert "no GPU fingerprint" in judge(image=image, fingerprint=cpu)
    assert "no GPU fingerprint" in judge(image=image, fingerprint=None)


def test_plan_other_compute_capability() -> None:
    image = image_target(format="tensorrt-plan", fingerprint=PLAN_FP)
    t4 = Fingerprint(arch="x86_64", platform="cuda", tensorrt="10.3.0", compute_capability="7.5")
    assert "compute capability 8.7, device has 7.5" in judge(image=image, fingerprint=t4)


def test_plan_other_tensorrt() -> None:
    image = image_target(format="tensorrt-plan", fingerprint=PLAN_FP)
    old = Fingerprint(arch="aarch64", tensorrt="8.6.2", compute_capability="8.7")
    assert "TensorRT 10.3, device has 8.6.2" in judge(image=image, fingerprint=old)


def test_agent_too_old() -> None:
    reason = judge(image=image_target(min_agent_version="0.2.0"), agent_version="0.1.9")
    assert "needs agent 0.2.0" in reason
    assert judge(image=image_target(min_agent_version="0.2"), agent_version="0.2.0") == ""
    assert judge(image=image_target(min_agent_version="0.2.0"), agent_version="0.10") == ""


def test_unreadable_min_agent_version() -> None:
    assert "unreadable" in judge(image=image_target(min_agent_version="latest"))


def test_parse_version() -> None:
    assert parse_version("10.3.0.26") == (10, 3, 0, 26)
    assert parse_version("v1.2rc1") == (1, 2)
    assert parse_version("nope") == ()
