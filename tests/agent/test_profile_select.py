"""Every shipped device class is recognised from what its agent detects."""

from __future__ import annotations

from pathlib import Path

import pytest
from edgefleet.agent.profile_select import (
    Hardware,
    jetpack_major,
    probe_board,
    probe_memory_mb,
    select_profile,
    with_profile,
)
from edgefleet.shared.profiles import load_profiles
from edgefleet.shared.protocol import Fingerprint

PROFILES = load_profiles(Path(__file__).resolve().parents[2] / "firmware_profiles")


@pytest.mark.parametrize(
    ("fp", "hw", "want"),
    [
        (Fingerprint(arch="x86_64", platform="cpu"), Hardware(), "cpu-x86_64"),
        (Fingerprint(arch="aarch64", platform="cpu"), Hardware(), "cpu-arm64"),
        (Fingerprint(arch="arm64", platform="cpu"), Hardware(), "cpu-arm64"),
        (
            Fingerprint(arch="aarch64", platform="jetson", jetpack="36.3.0", tensorrt="8.6.2"),
            Hardware(board="NVIDIA Jetson Orin Nano Developer Kit", memory_mb=7620),
            "jetson-orin-nano-8gb-jp6",
        ),
        (
            Fingerprint(arch="aarch64", platform="jetson", jetpack="36.2.0"),
            Hardware(board="NVIDIA Jetson AGX Orin Developer Kit", memory_mb=30536),
            "jetson-agx-orin-jp6",
        ),
        (  # no board name: the memory size tells an AGX Orin from an Orin Nano
            Fingerprint(arch="aarch64", platform="jetson", jetpack="36.3.0"),
            Hardware(memory_mb=30536),
            "jetson-agx-orin-jp6",
        ),
        (
            Fingerprint(arch="aarch64", platform="jetson", jetpack="35.4.1"),
            Hardware(board="NVIDIA Jetson Xavier NX Developer Kit"),
            "jetson-xavier-nx-jp5",
        ),
        (
            Fingerprint(arch="x86_64", platform="cuda", compute_capability="7.5", tensorrt="10.3"),
            Hardware(),
            "x86-t4-trt10",
        ),
        (
            Fingerprint(arch="x86_64", platform="cuda", compute_capability="8.9"),
            Hardware(),
            "x86-l4-trt10",
        ),
        (  # a GPU no profile knows: run on its CPU rather than guess an engine
            Fingerprint(arch="x86_64", platform="cuda", compute_capability="9.0"),
            Hardware(),
            "cpu-x86_64",
        ),
        (  # JetPack 4 has no profile
            Fingerprint(arch="aarch64", platform="jetson", jetpack="32.7.4"),
            Hardware(),
            "cpu-arm64",
        ),
    ],
)
def test_select_profile(fp: Fingerprint, hw: Hardware, want: str):
    chosen = select_profile(fp, PROFILES, hw)
    assert chosen is not None
    assert chosen.name == want


def test_no_profile_for_an_unknown_arch():
    assert select_profile(Fingerprint(arch="riscv64"), PROFILES) is None


def test_reported_fingerprint_names_the_profile_and_fills_compute_capability():
    fp = Fingerprint(arch="aarch64", platform="jetson", jetpack="36.3.0")
    reported = with_profile(fp, PROFILES["jetson-orin-nano-8gb-jp6"])
    assert reported.profile == "jetson-orin-nano-8gb-jp6"
    assert reported.compute_capability == "8.7"
    assert with_profile(fp, None) == fp


def test_jetpack_major():
    assert jetpack_major("36.3.0") == "6"
    assert jetpack_major("35.4.1") == "5"
    assert jetpack_major("6.0") == "6"
    assert jetpack_major(None) is None


def test_probes_read_real_files_and_never_raise(tmp_path: Path):
    model = tmp_path / "model"
    model.write_bytes(b"NVIDIA Jetson AGX Orin Developer Kit\x00")
    assert probe_board(model) == "NVIDIA Jetson AGX Orin Developer Kit"
    assert probe_board(tmp_path / "missing") is None
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       31268032 kB\nMemFree: 1 kB\n")
    assert probe_memory_mb(meminfo) == 30535
    assert probe_memory_mb(tmp_path / "missing") is None


def test_compute_capability_from_the_driver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from edgefleet.agent.fingerprint import detect_fingerprint
    from edgefleet.agent.profile_select import probe_compute_capability

    # A real executable on PATH standing in for the driver's tool, then none at all.
    smi = tmp_path / "nvidia-smi"
    for output, want in (("8.9\n8.9\n", "8.9"), ("7.5\n", "7.5"), ("[N/A]\n", None)):
        smi.write_text(f"#!/bin/sh\nprintf '{output}'\n")
        smi.chmod(0o755)
        monkeypatch.setenv("PATH", str(tmp_path))
        assert probe_compute_capability() == want, output
    smi.write_text("#!/bin/sh\necho 8.6\n")
    fp = detect_fingerprint(tegra_release=tmp_path / "not-a-jetson")
    assert (fp.platform, fp.compute_capability) == ("cuda", "8.6")  # reported to the controller
    smi.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n")
    assert probe_compute_capability() is None
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert probe_compute_capability() is None
