"""What one signed model artifact is, as both repositories describe it."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Any

from edgefleet.shared.engines import EngineFingerprint
from edgefleet.shared.errors import ArtifactError
from tuf.api.metadata import TargetFile

# the image repository's role that models are delegated to, and the paths it may sign
MODELS_ROLE = "models"
# Delegated paths match segment by segment, so "models/*" alone would match nothing
# below models/<name>/<version>/: the pattern spells out the three levels.
MODELS_PATHS = ["models/*/*/*"]
FORMATS = {"onnx": "model.onnx", "tensorrt-plan": "model.plan"}
# control, invisible formatting (RTL override, zero width), surrogate, private, unassigned,
# line and paragraph separators: the same list the agent's install policy refuses
_INVISIBLE = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


@dataclass(frozen=True)
class TargetInfo:
    """A target as the director lists it: same path, length and sha256 as the image repo.

    ``model``, ``version`` and ``release`` become the director's ``custom``; the agent
    refuses to install when they disagree with the image repository's.
    """

    target_path: str  # models/<name>/<version>/model.onnx
    length: int  # bytes
    sha256: str  # hex
    model: str
    version: str
    release: int  # grows per model
    shadow: dict[str, Any] | None = None  # the rollout stage's shadow phase, for this device

    def director_custom(self) -> dict[str, Any]:
        custom: dict[str, Any] = {
            "model": self.model, "version": self.version, "release": self.release
        }  # fmt: skip
        if self.shadow is not None:
            custom["shadow"] = self.shadow
        return custom

    def director_target_file(self) -> TargetFile:
        hashes = {"sha256": self.sha256}
        return TargetFile(self.length, hashes, self.target_path, {"custom": self.director_custom()})

    @classmethod
    def from_target_file(cls, target: TargetFile) -> TargetInfo:
        custom = target.custom
        return cls(
            target_path=target.path,
            length=target.length,
            sha256=target.hashes["sha256"],
            model=custom["model"],
            version=custom["version"],
            release=int(custom["release"]),
            shadow=custom["shadow"] if isinstance(custom.get("shadow"), dict) else None,
        )


def check_segment(what: str, value: str) -> str:
    """Refuse anything that could escape ``models/<name>/<version>/`` on any host."""
    bad = (
        not value
        or value in (".", "..")
        or ".." in value
        or "/" in value
        or "\\" in value
        or value.startswith("~")
        or ":" in value
        or any(unicodedata.category(c) in _INVISIBLE for c in value)
    )
    if bad:
        raise ArtifactError(f"invalid {what} {value!r}: no '..', slashes, colons or backslashes")
    if unicodedata.normalize("NFC", value) != value:
        raise ArtifactError(f"invalid {what} {value!r}: not in Unicode NFC form")
    return value


def model_target_path(name: str, version: str, fmt: str = "onnx") -> str:
    if fmt not in FORMATS:
        raise ArtifactError(f"unknown model format {fmt!r}: use one of {sorted(FORMATS)}")
    name = check_segment("model name", name)
    version = check_segment("model version", version)
    return f"models/{name}/{version}/{FORMATS[fmt]}"


def plan_target_path(name: str, version: str, engine: EngineFingerprint) -> str:
    """``models/<name>/<version>/plan-sm87-trt10.3.0-fp16.plan``: one per fingerprint."""
    if problems := engine.problems():
        raise ArtifactError(f"invalid engine fingerprint: {'; '.join(problems)}")
    name = check_segment("model name", name)
    version = check_segment("model version", version)
    return f"models/{name}/{version}/{check_segment('plan', f'plan-{engine.slug()}.plan')}"


def target_custom(
    name: str,
    version: str,
    release: int,
    *,
    format: str = "onnx",
    fingerprint: dict[str, Any] | None = None,
    min_agent_version: str = "0.1.0",
    card_sha256: str | None = None,
    model_info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``custom`` fields of a model target, exactly as ImageRepository writes them.

    A plan carries ``model_info`` (input size, class names, output kind): a serialized
    engine has no metadata of its own, and the device runs it without the ONNX.
    """
    extra = {"model_info": model_info} if model_info is not None else {}
    return {
        "model": name,
        "version": version,
        "release": int(release),
        "format": format,
        "fingerprint": fingerprint,
        "min_agent_version": min_agent_version,
        "card_sha256": card_sha256,
        **extra,
    }
