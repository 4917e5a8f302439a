"""The image repository: which model artifacts may run at all.

Roles root / targets / snapshot / timestamp; ``targets`` delegates every model path to
the role ``models`` (the publisher's key). Metadata lives in ``image/metadata/`` of the
metadata store (``DATA/tuf/`` or the database, see storage.py).
The artifact bytes are not copied here: the controller keeps them in its
content-addressed store and serves them under the hash-prefixed target name.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from edgefleet.controller.signing._chain import MetadataChain
from edgefleet.controller.signing.keys import KeyStore
from edgefleet.controller.signing.publisher import check_models_update, install_models_update
from edgefleet.controller.signing.storage import IMAGE, MetadataStore
from edgefleet.controller.signing.targets import (
    MODELS_PATHS,
    MODELS_ROLE,
    TargetInfo,
    model_target_path,
    plan_target_path,
    target_custom,
)
from edgefleet.shared.engines import EngineFingerprint
from edgefleet.shared.errors import ArtifactError, NotFoundError, TrustError
from edgefleet.shared.hashing import sha256_file
from tuf.api.metadata import Metadata, TargetFile, Targets

ROLES = ("root", "targets", "snapshot", "timestamp", MODELS_ROLE)
ONLINE = frozenset({"snapshot", "timestamp"})


class ImageRepository:
    """Signs model targets into the image repository; loads it or creates it on start."""

    def __init__(self, store: MetadataStore, keys: KeyStore, clock: Callable[[], datetime]) -> None:
        self._clock = clock
        # Other controller processes on this store sign too: every use holds the store's
        # lock and first re-reads what they published.
        self._lock = store.lock(on_enter=self._reread)
        self._ready = False  # nothing to re-read while the constructor holds the lock
        files = store.files(IMAGE)
        with self._lock:
            exists = files.stamp() is not None
            # An existing repository made by `edgefleet keys init` keeps root, targets and
            # models keys off the controller: sign only with the keys this folder holds.
            signers = {
                role: keys.signer(f"image-{role}")
                for role in ROLES
                if not exists or role in ONLINE or keys.has(f"image-{role}")
            }
            self.can_sign_models = MODELS_ROLE in signers
            self._chain = MetadataChain(files, signers, ONLINE)
            if exists:
                self._chain.load()
            else:
                self._chain.create(clock(), {MODELS_ROLE: MODELS_PATHS})
        self._ready = True

    def _reread(self) -> None:
        if self._ready:
            self._chain.refresh_from_disk()

    def add_model_target(
        self,
        name: str,
        version: str,
        release: int,
        artifact_path: Path,
        *,
        format: str = "onnx",
        fingerprint: dict[str, Any] | None = None,
        min_agent_version: str = "0.1.0",
        card_sha256: str | None = None,
        model_info: dict[str, Any] | None = None,
    ) -> TargetInfo:
        """Sign ``models/<name>/<version>/model.onnx`` (or a plan of it) into the ``models`` role.

        Re-adding the same version with the same bytes and fields changes nothing; a
        different artifact under a published version, or a release that does not grow,
        raises ArtifactError.
        """
        if format == "tensorrt-plan":
            engine = EngineFingerprint.from_custom(fingerprint)
            if engine is None:
                raise ArtifactError("a tensorrt-plan target needs a complete engine fingerprint")
            path = plan_target_path(name, version, engine)
        else:
            path = model_target_path(name, version, format)
        if not self.can_sign_models:
            raise TrustError(
                "this controller holds no key for the models role: sign on the publisher's "
                "machine with `edgefleet model push --key FILE`",
                model=name,
            )
        custom = target_custom(
            name, version, release, format=format, fingerprint=fingerprint,
            min_agent_version=min_agent_version, card_sha256=card_sha256, model_info=model_info,
        )  # fmt: skip
        try:
            length, sha = Path(artifact_path).stat().st_size, sha256_file(artifact_path)
        except OSError as e:
            raise ArtifactError(f"cannot read artifact {artifact_path}: {e}") from e
        target = TargetFile(length, {"sha256": sha}, path, {"custom": custom})
        with self._lock:
            models = self._chain.targets(MODELS_ROLE)
            if _same_target(models.targets.get(path), target):
                return TargetInfo.from_target_file(target)
            _check_new(models, target)

            def add(models: Targets) -> None:
                models.targets[path] = target

            self._chain.update_targets(MODELS_ROLE, self._clock(), add)
        return TargetInfo.from_target_file(target)

    def publish_signed_models(
        self,
        md: Metadata[Targets],
        target_path: str,
        length: int,
        sha256: str,
        custom: dict[str, Any],
        *,
        check_only: bool = False,
    ) -> TargetInfo:
        """Publish ``models`` metadata the publisher signed (controller/signing/publisher.py)."""
        with self._lock:
            now = self._clock()
            check_models_update(
                self._chain, md, target_path=target_path, length=length, sha256=sha256,
                custom=custom, now=now,
            )  # fmt: skip
            if not check_only:
                install_models_update(self._chain, md, now)
        return TargetInfo.from_target_file(md.signed.targets[target_path])

    def target(self, target_path: str) -> TargetInfo:
        """The signed TargetInfo for a published path (NotFoundError if none)."""
        with self._lock:
            found = self._chain.targets(MODELS_ROLE).targets.get(target_path)
        if found is None:
            raise NotFoundError(f"no signed target {target_path}")
        return TargetInfo.from_target_file(found)

    def version(self, role: str = MODELS_ROLE) -> int:
        with self._lock:
            return self._chain.version(role)

    def refresh_online_roles(self, now: datetime) -> list[str]:
        """Re-sign snapshot / timestamp when less than half their lifetime is left."""
        with self._lock:
            return self._chain.refresh_online(now)


def _same_target(old: TargetFile | None, new: TargetFile) -> bool:
    return old is not None and old.to_dict() == new.to_dict()


def _check_new(models: Targets, target: TargetFile) -> None:
    """Published versions are immutable and releases only grow, per model."""
    if target.path in models.targets:
        raise ArtifactError(f"{target.path} is already signed with other content")
    model, release = target.custom["model"], target.custom["release"]
    if target.custom.get("format") == "tensorrt-plan":
        # A plan joins a published version: same model, version and release as its ONNX.
        version = target.custom["version"]
        if not any(
            o.custom.get("format") == "onnx"
            and (o.custom.get("model"), o.custom.get("version"), o.custom.get("release"))
            == (model, version, release)
            for o in models.targets.values()
        ):
            raise ArtifactError(f"{model}:{version} release {release} has no signed ONNX")
        return
    for other in models.targets.values():
        if other.custom.get("model") == model and other.custom.get("release", 0) >= release:
            raise ArtifactError(
                f"release {release} of {model} is not above published release "
                f"{other.custom['release']}",
                model=model,
            )
