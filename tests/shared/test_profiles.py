from __future__ import annotations

from pathlib import Path

import pytest
from edgefleet.shared.errors import ConfigError
from edgefleet.shared.profiles import load_profile, load_profiles

FOLDER = Path(__file__).resolve().parents[2] / "firmware_profiles"


def test_every_shipped_profile_validates_and_is_named_after_its_file() -> None:
    profiles = load_profiles(FOLDER)
    for path in FOLDER.glob("*.yaml"):
        assert path.stem in profiles
    assert {"jetson-orin-nano-8gb-jp6", "jetson-agx-orin-jp6", "jetson-xavier-nx-jp5",
            "x86-t4-trt10", "x86-l4-trt10", "cpu-x86_64", "cpu-arm64"} <= set(profiles)  # fmt: skip


def test_gpu_profiles_name_their_tensorrt_and_compute_capability() -> None:
    for p in load_profiles(FOLDER).values():
        if "tensorrt" in p.backends:
            assert p.tensorrt and p.compute_capability, p.name


def test_bad_profile_is_one_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\narch: sparc\n")
    with pytest.raises(ConfigError, match=r"invalid profile bad.yaml"):
        load_profile(bad)
