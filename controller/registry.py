"""Model registry: push a version (validate, store, sign, record) and read versions back."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from edgefleet.controller.artifacts import ArtifactStore, validate_onnx
from edgefleet.controller.detector_check import check_detector
from edgefleet.controller.models.registry import Model, ModelPublic, ModelVersion, VersionPublic
from edgefleet.controller.trust import Signing
from edgefleet.shared.errors import ArtifactError, ConflictError, NotFoundError
from sqlalchemy import func
from sqlmodel import Session, col, select

# Names and versions become URL and TUF path segments: keep them boring.
if TYPE_CHECKING:
    from edgefleet.controller.signing import TargetInfo

_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_RESIGNED = re.compile(r"^(?P<source>.+?)(?:-rb\d+)+$")
# One push at a time per process: the release counter is "previous max + 1".
PUSH_LOCK = threading.Lock()


class VersionExistsError(ConflictError):
    """The model already has a version with this label (HTTP 409)."""


def check_label(what: str, value: str) -> str:
    if not _LABEL.match(value) or ".." in value:
        raise ArtifactError(f"invalid {what} {value!r}: use letters, digits, . _ - (max 64)")
    return value


def get_version(session: Session, name: str, version: str) -> ModelVersion:
    row: ModelVersion | None = session.exec(
        select(ModelVersion).where(ModelVersion.name == name, ModelVersion.version == version)
    ).first()
    if row is None:
        if session.get(Model, name) is None:
            raise NotFoundError(f"unknown model {name!r}", model=name)
        raise NotFoundError(f"model {name!r} has no version {version!r}", model=name)
    return row


def list_versions(session: Session, name: str) -> list[ModelVersion]:
    if session.get(Model, name) is None:
        raise NotFoundError(f"unknown model {name!r}", model=name)
    stmt = select(ModelVersion).where(ModelVersion.name == name).order_by(col(ModelVersion.release))
    return list(session.exec(stmt).all())


def list_models(session: Session) -> list[ModelPublic]:
    versions = session.exec(
        select(ModelVersion).order_by(col(ModelVersion.name), col(ModelVersion.release))
    ).all()
    names = session.exec(select(Model.name).order_by(col(Model.name))).all()
    out = []
    for name in names:
        mine = public_versions([v for v in versions if v.name == name])
        production = next((v.version for v in mine if v.stage == "production" and
                           v.version == source_label(v.version)), None)  # fmt: skip
        out.append(ModelPublic(name=name, latest_version=mine[-1].version if mine else None,
                               production=production, versions=mine))  # fmt: skip
    return out


def public_versions(rows: list[ModelVersion]) -> list[VersionPublic]:
    """Rows of one model as the API shows them: a re-signed copy (``v1-rb9``) carries its
    source's registry stage."""
    stages = {r.version: r.stage for r in rows}
    out = []
    for r in rows:
        stage = stages.get(source_label(r.version), r.stage)
        out.append(VersionPublic.model_validate(r, update={"stage": stage}))
    return out


def source_label(label: str) -> str:
    """``v1-rb9`` (and ``v1-rb9-rb12``) -> ``v1``; any other label unchanged (the label
    ``rollouts/releases.py`` gives a version's re-signed copy)."""
    m = _RESIGNED.match(label)
    return m.group("source") if m else label


# (staged file, sha256, length, version, release) -> the signed target; it also commits
# the staged bytes to the store, before or after signing as its repository needs
SignPush = Callable[[Path, str, int, str, int], "TargetInfo"]


def push_version(
    session: Session,
    store: ArtifactStore,
    signing: Signing,
    name: str,
    source: BinaryIO,
    *,
    version: str | None = None,
    lineage: dict[str, Any] | None = None,
) -> ModelVersion:
    """Validate the upload as ONNX, store it by content, sign it, record it."""
    check_label("model name", name)
    if version is not None:
        check_label("version", version)

    def sign(tmp: Path, digest: str, _length: int, version: str, release: int) -> TargetInfo:
        stored = store.commit(tmp, digest)
        return signing.add_model_target(name, version, release, stored.path, format="onnx")

    return push_onnx(session, store, name, source, version=version, sign=sign, lineage=lineage)


def push_onnx(
    session: Session,
    store: ArtifactStore,
    name: str,
    source: BinaryIO,
    *,
    version: str | None,
    sign: SignPush,
    lineage: dict[str, Any] | None = None,
) -> ModelVersion:
    """The push core: stage the upload, refuse what is not a detector the agent can run,
    then, one push at a time, take the next release (and ``v<release>`` as the default
    version), refuse a version that exists, sign and record. The labels are checked by
    the caller. ``lineage`` (controller/lineage.py) is stored on the version as given,
    its ``onnx.sha256`` checked against the uploaded bytes."""
    with store.staged(source) as (tmp, digest, length):
        validate_onnx(tmp)
        check_detector(tmp)
        if lineage is not None:
            check_lineage(lineage, digest)
        with PUSH_LOCK:
            release = next_release(session, name)
            version = version or f"v{release}"
            if _exists(session, name, version):
                raise VersionExistsError(
                    f"model {name!r} already has version {version!r}", model=name
                )
            info = sign(tmp, digest, length, version, release)
            return _record(session, name, version, release, info, lineage=lineage)


def next_release(session: Session, name: str) -> int:
    current = session.exec(
        select(func.max(ModelVersion.release)).where(ModelVersion.name == name)
    ).one()
    return int(current or 0) + 1


def _exists(session: Session, name: str, version: str) -> bool:
    stmt = select(ModelVersion.id).where(ModelVersion.name == name, ModelVersion.version == version)
    return session.exec(stmt).first() is not None


def check_lineage(lineage: dict[str, Any], digest: str) -> None:
    """A lineage document is about these bytes: refuse one collected for another file."""
    onnx = lineage.get("onnx")
    sha = onnx.get("sha256") if isinstance(onnx, dict) else None
    if sha != digest:
        raise ArtifactError(
            f"the lineage describes ONNX sha256 {str(sha)[:12]}, not the uploaded {digest[:12]}"
        )


def _record(
    session: Session,
    name: str,
    version: str,
    release: int,
    info: TargetInfo,
    *,
    lineage: dict[str, Any] | None = None,
) -> ModelVersion:
    if session.get(Model, name) is None:
        session.add(Model(name=name))
    row = ModelVersion(
        name=name,
        version=version,
        release=release,
        sha256=info.sha256,
        length=info.length,
        target=info.target_path,
        format="onnx",
        lineage=lineage,
    )
    session.add(row)
    session.commit()
    session.refresh(row)
    return row
