"""What this device is, for choosing an artifact: arch, Jetson or not, runtimes present,
the GPU's compute capability (from the driver on x86; from the profile on a Jetson)."""

from __future__ import annotations

import importlib
import platform
import re
from pathlib import Path

from edgefleet.agent.profile_select import probe_compute_capability
from edgefleet.shared.protocol import Fingerprint

TEGRA_RELEASE = Path("/etc/nv_tegra_release")
_L4T = re.compile(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)")


def _module_version(name: str) -> str | None:
    try:
        mod = importlib.import_module(name)
    except ImportError:
        return None
    version = getattr(mod, "__version__", None)
    return str(version) if version else None


def l4t_version(tegra_release: Path = TEGRA_RELEASE) -> str | None:
    """The L4T release ("36.3.0") from /etc/nv_tegra_release, or None off a Jetson."""
    try:
        text = tegra_release.read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    m = _L4T.search(text)
    return f"{m.group(1)}.{m.group(2)}" if m else "unknown"


def _has_cuda() -> bool:
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return "CUDAExecutionProvider" in ort.get_available_providers()


def detect_fingerprint(
    *, tegra_release: Path = TEGRA_RELEASE, profile: str | None = None
) -> Fingerprint:
    l4t = l4t_version(tegra_release)
    cap = None if l4t else probe_compute_capability()  # a Jetson's comes from its profile
    return Fingerprint(
        arch=platform.machine() or "unknown",
        platform="jetson" if l4t else ("cuda" if cap or _has_cuda() else "cpu"),
        compute_capability=cap,
        jetpack=l4t,  # L4T release; the firmware profile maps it to a JetPack version
        tensorrt=_module_version("tensorrt"),
        onnxruntime=_module_version("onnxruntime"),
        profile=profile,
    )
