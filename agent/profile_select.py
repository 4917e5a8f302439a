"""Which firmware profile describes this device: a pure choice from its fingerprint.

The probes that feed it (board name from the device tree, GPU compute capability, total
memory) are small functions at the bottom that never raise; :func:`select_profile` itself
does no I/O, so every device class is tested on any machine.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from edgefleet.shared.profiles import FirmwareProfile, shipped_profiles_dir
from edgefleet.shared.protocol import Fingerprint

DEVICE_TREE_MODEL = Path("/proc/device-tree/model")
MEMINFO = Path("/proc/meminfo")
NVIDIA_SMI_TIMEOUT_S = 5.0
_ARCH_ALIASES = {"arm64": "aarch64", "amd64": "x86_64", "x64": "x86_64"}
# L4T major release -> JetPack major version (r32: JP4, r35: JP5, r36: JP6)
_L4T_TO_JETPACK = {"32": "4", "35": "5", "36": "6"}
# words in /proc/device-tree/model -> words in a profile name
_BOARDS = (("agx orin", "agx-orin"), ("orin nano", "orin-nano"), ("xavier nx", "xavier-nx"))


@dataclass(frozen=True)
class Hardware:
    """What the probes found beside the fingerprint; every field may be unknown."""

    board: str | None = None  # "NVIDIA Jetson AGX Orin Developer Kit"
    memory_mb: int | None = None


def normal_arch(arch: str) -> str:
    return _ARCH_ALIASES.get(arch.lower(), arch.lower())


def jetpack_major(l4t_or_jetpack: str | None) -> str | None:
    """ "36.3.0" (L4T) or "6.0" (JetPack) -> "6"."""
    if not l4t_or_jetpack:
        return None
    major = l4t_or_jetpack.split(".")[0]
    return _L4T_TO_JETPACK.get(major, major)


def _major(version: str | None) -> str | None:
    return version.split(".")[0] if version else None


def _fits(p: FirmwareProfile, fp: Fingerprint) -> bool:
    if p.arch != normal_arch(fp.arch) or p.platform != fp.platform:
        return False
    if p.platform == "jetson" and jetpack_major(fp.jetpack) != jetpack_major(p.jetpack):
        return False
    if fp.compute_capability and p.compute_capability:
        return bool(fp.compute_capability == p.compute_capability)
    return True


def _score(p: FirmwareProfile, fp: Fingerprint, hw: Hardware) -> tuple[int, int, int, str]:
    board = (hw.board or "").lower()
    board_hit = any(word in board and tag in p.name for word, tag in _BOARDS)
    trt_hit = fp.tensorrt is not None and _major(fp.tensorrt) == _major(p.tensorrt)
    mem_gap = abs(p.memory_mb - hw.memory_mb) if hw.memory_mb else 0
    return (-int(board_hit), -int(trt_hit), mem_gap, p.name)


def select_profile(
    fp: Fingerprint, profiles: Mapping[str, FirmwareProfile], hw: Hardware | None = None
) -> FirmwareProfile | None:
    """The best profile for this device, the CPU profile of its arch when no other fits,
    or None when there is not even that. Ties go to the board name, then the TensorRT
    major version, then the closest memory size, then the name."""
    hw = hw or Hardware()
    fitting = [p for p in profiles.values() if _fits(p, fp)]
    if fitting:
        return min(fitting, key=lambda p: _score(p, fp, hw))
    cpu = [p for p in profiles.values() if p.platform == "cpu" and p.arch == normal_arch(fp.arch)]
    return min(cpu, key=lambda p: p.name) if cpu else None


# -- probes (never raise) -----------------------------------------------------------------


def probe_board(path: Path = DEVICE_TREE_MODEL) -> str | None:
    try:
        return path.read_text(encoding="ascii", errors="replace").strip("\x00\n ") or None
    except OSError:
        return None


def probe_memory_mb(path: Path = MEMINFO) -> int | None:
    try:
        m = re.search(r"MemTotal:\s+(\d+)\s+kB", path.read_text(encoding="ascii"))
    except OSError:
        return None
    return int(m.group(1)) // 1024 if m else None


def probe_compute_capability() -> str | None:
    """From nvidia-smi on x86 GPUs; Jetsons have none and their profile gives it."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run(
            [smi, "--query-gpu=compute_cap", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_S, check=False,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    first = out.stdout.strip().splitlines()[0] if out.stdout.strip() else ""
    return first if re.fullmatch(r"\d+\.\d+", first) else None


def probe_hardware() -> Hardware:
    return Hardware(board=probe_board(), memory_mb=probe_memory_mb())


def with_profile(fp: Fingerprint, profile: FirmwareProfile | None) -> Fingerprint:
    """The fingerprint the agent reports: its profile's name, and the compute capability
    the profile knows when the device could not say (Jetsons)."""
    if profile is None:
        return fp
    cc = fp.compute_capability or profile.compute_capability
    return fp.model_copy(update={"profile": profile.name, "compute_capability": cc})


def resolve_profile(
    fp: Fingerprint, *, name: str | None, folder: Path | None
) -> FirmwareProfile | None:
    """The thin shell: load the profiles, then the named one or :func:`select_profile`."""
    from edgefleet.shared.errors import ConfigError
    from edgefleet.shared.profiles import load_profiles

    folder = folder or shipped_profiles_dir()
    profiles = load_profiles(folder) if folder.is_dir() else {}
    if name is not None:
        if name not in profiles:
            raise ConfigError(f"profile {name!r} is not in {folder}")
        return profiles[name]
    if fp.platform == "cuda" and not fp.compute_capability:
        fp = fp.model_copy(update={"compute_capability": probe_compute_capability()})
    return select_profile(fp, profiles, probe_hardware())
