"""May this artifact run on this device? The pure decision, no I/O.

The director says *what this device must run*; the image repository says *what may run
at all*. An artifact is installed only when both, each verified by TUF already, describe
the same bytes (length and every hash they share), the same model and version, a release
counter that does not go backwards, and a format this device and this agent can run.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edgefleet.shared.engines import EngineFingerprint, parse_version
from edgefleet.shared.protocol import Fingerprint
from tuf.api.metadata import TargetFile

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class VerifiedTarget:
    """An artifact both repositories agree on and this device may install."""

    target_path: str  # models/<name>/<version>/model.onnx
    model: str
    version: str
    release: int  # grows per model
    length: int  # bytes
    sha256: str  # hex
    format: str  # onnx | tensorrt-plan
    custom: Mapping[str, Any] = field(default_factory=dict)  # the image repo's custom
    # The rollout stage's shadow phase (frames, timeout_s, min_match_permille), signed by the
    # director for this device; None: the agent config decides.
    shadow: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Decision:
    """``target`` when accepted; otherwise ``reason`` says why not, in one line."""

    target: VerifiedTarget | None
    reason: str = ""

    @property
    def accepted(self) -> bool:
        return self.target is not None


def decide(
    director: TargetFile,
    image: TargetFile | None,
    installed_releases: Mapping[str, int],
    fingerprint: Fingerprint | None,
    agent_version: str,
) -> Decision:
    """Judge one director target against the image repository's target of the same path."""
    if image is None:
        return _refuse(f"{director.path} is not signed in the image repository")
    reason = (
        _same_bytes(director, image)
        or _malformed(image.custom)
        or _same_model(director.custom, image.custom)
        or _release_not_lower(image.custom, installed_releases)
        or _format_fits(image.custom, fingerprint)
        or _safe_path(image.path, image.custom)
        or _agent_new_enough(image.custom, agent_version)
    )
    if reason:
        return _refuse(f"{director.path}: {reason}")
    custom = image.custom
    target = VerifiedTarget(
        target_path=image.path,
        model=custom["model"],
        version=custom["version"],
        release=custom["release"],
        length=image.length,
        sha256=image.hashes["sha256"],
        format=custom["format"],
        custom=dict(custom),
        shadow=_shadow(director.custom.get("shadow")),
    )
    return Decision(target)


def _shadow(value: object) -> Mapping[str, Any] | None:
    return dict(value) if isinstance(value, Mapping) else None


def _refuse(reason: str) -> Decision:
    return Decision(None, reason)


def _same_bytes(director: TargetFile, image: TargetFile) -> str:
    if director.path != image.path:
        return f"image target path {image.path} differs"
    if director.length != image.length:
        return f"length differs: director {director.length}, image {image.length}"
    common = sorted(set(director.hashes) & set(image.hashes))
    if not common:
        return "director and image share no hash algorithm"
    for algo in common:
        if director.hashes[algo] != image.hashes[algo]:
            return f"{algo} differs between director and image"
    if not _SHA256.match(str(image.hashes.get("sha256", ""))):
        return "image target has no well-formed sha256"
    return ""


def _safe_path(path: str, custom: Mapping[str, Any]) -> str:
    """The path must be ``models/<model>/<version>/<file>``, every segment tame.

    A signed name is still a name from the network: no ``..``, no absolute path, no
    backslash, no control or invisible formatting characters (RTL override, zero
    width), and NFC form, so one name cannot look like another on disk or in a log.
    """
    prefix = f"models/{custom['model']}/{custom['version']}/"
    if not path.startswith(prefix) or path.count("/") != 3:
        return f"target path {path!r} is not {prefix}<file>"
    for segment in path.split("/"):
        if reason := unsafe_segment(segment):
            return f"unsafe target name segment {segment!r}: {reason}"
    return ""


def unsafe_segment(segment: str) -> str:
    """Why ``segment`` may not be one path segment of a target name; "" when it may."""
    if segment in ("", ".", "..") or ".." in segment:
        return "empty or dot-dot"
    if any(c in segment for c in "/\\:") or segment.startswith("~"):
        return "separator, drive or home prefix"
    if unicodedata.normalize("NFC", segment) != segment:
        return "not in Unicode NFC form"
    if any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp") for c in segment):
        return "control, invisible or unassigned character"
    return ""


def _malformed(custom: Mapping[str, Any]) -> str:
    expected = {"model": str, "version": str, "release": int, "format": str}
    for key, typ in expected.items():
        value = custom.get(key)
        if not isinstance(value, typ) or isinstance(value, bool):
            return f"image custom {key!r} missing or not {typ.__name__}"
    return ""


def _same_model(director: Mapping[str, Any], image: Mapping[str, Any]) -> str:
    for key in ("model", "version", "release"):
        if director.get(key) != image[key]:
            return f"{key} differs: director {director.get(key)!r}, image {image[key]!r}"
    return ""


def _release_not_lower(custom: Mapping[str, Any], installed: Mapping[str, int]) -> str:
    current = installed.get(custom["model"])
    if current is not None and custom["release"] < current:
        return f"release {custom['release']} is lower than installed release {current}"
    return ""


def _format_fits(custom: Mapping[str, Any], fingerprint: Fingerprint | None) -> str:
    fmt = custom["format"]
    if fmt == "onnx":
        return ""
    if fmt != "tensorrt-plan":
        return f"unknown format {fmt!r}"
    return _plan_fits(custom.get("fingerprint"), fingerprint)


def _plan_fits(plan: object, fingerprint: Fingerprint | None) -> str:
    engine = EngineFingerprint.from_custom(plan)
    if engine is None:
        return "tensorrt-plan without a complete engine fingerprint"
    if fingerprint is None or fingerprint.compute_capability is None:
        return "tensorrt-plan but this device has no GPU fingerprint"
    if engine.compute_capability != fingerprint.compute_capability:
        return (
            f"plan built for compute capability {engine.compute_capability}, "
            f"device has {fingerprint.compute_capability}"
        )
    if not engine.fits(fingerprint.compute_capability, fingerprint.tensorrt):
        return f"plan built for TensorRT {engine.tensorrt}, device has {fingerprint.tensorrt}"
    return ""


def _agent_new_enough(custom: Mapping[str, Any], agent_version: str) -> str:
    needed = str(custom.get("min_agent_version") or "0")
    want, have = parse_version(needed), parse_version(agent_version)
    if not want:
        return f"unreadable min_agent_version {needed!r}"
    if _pad(have, len(want)) < _pad(want, len(have)):
        return f"needs agent {needed}, this agent is {agent_version}"
    return ""


def _pad(v: tuple[int, ...], n: int) -> tuple[int, ...]:
    return v + (0,) * max(0, n - len(v))
