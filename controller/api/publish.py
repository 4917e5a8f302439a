"""/v1/models/{name}/signed: a push whose ``models`` metadata the publisher signed.

``edgefleet model push NAME FILE --key FILE`` asks ``next-release`` for the release and
version the controller will record, signs the ``models`` role on the publisher's machine
(controller/signing/publisher.py) and uploads the artifact with the signed metadata. The
controller verifies the signature against the delegation in its ``targets`` role, the
version (current + 1), the unchanged existing targets and the new target's length and
hash against the uploaded bytes, then publishes it with a new snapshot and timestamp.
"""

from __future__ import annotations

from typing import Annotated, Any

from edgefleet.controller.api.deps import ActorNameDep, ServicesDep, SessionDep, http_errors
from edgefleet.controller.artifacts import validate_onnx
from edgefleet.controller.detector_check import check_detector
from edgefleet.controller.models import AuditEntry, VersionPublic
from edgefleet.controller.registry import (
    _PUSH_LOCK,
    VersionExistsError,
    _exists,
    _next_release,
    _record,
    check_label,
)
from edgefleet.controller.signing.publisher import MAX_METADATA_BYTES, parse_models
from edgefleet.controller.signing.targets import model_target_path, target_custom
from edgefleet.shared.errors import ConfigError, TrustError
from fastapi import APIRouter, Form, UploadFile

router = APIRouter(prefix="/v1/models", tags=["models"])


def _image(services: Any) -> Any:
    repos = getattr(services.signing, "repos", None)
    if repos is None:
        raise ConfigError("this controller's signing backend cannot take publisher-signed metadata")
    return repos.image


@router.get("/{name}/next-release")
def next_release(name: str, session: SessionDep) -> dict[str, Any]:
    """The release (and default version) the next push of ``name`` gets."""
    with http_errors():
        check_label("model name", name)
        release = _next_release(session, name)
    return {"name": name, "release": release, "version": f"v{release}"}


@router.post("/{name}/signed", response_model=VersionPublic)
def push_signed(
    name: str,
    *,
    file: UploadFile,
    metadata: UploadFile,
    session: SessionDep,
    services: ServicesDep,
    actor: ActorNameDep,
    version: Annotated[str | None, Form()] = None,
) -> VersionPublic:
    """Upload an ONNX model with the ``models`` metadata that signs it."""
    with http_errors():
        check_label("model name", name)
        if version is not None:
            check_label("version", version)
        raw = metadata.file.read(MAX_METADATA_BYTES + 1)
        if len(raw) > MAX_METADATA_BYTES:
            raise TrustError(f"models metadata larger than {MAX_METADATA_BYTES} bytes")
        md = parse_models(raw)
        image = _image(services)
        with services.store.staged(file.file) as (tmp, digest, length):
            validate_onnx(tmp)
            check_detector(tmp)
            with _PUSH_LOCK:
                release = _next_release(session, name)
                version = version or f"v{release}"
                if _exists(session, name, version):
                    raise VersionExistsError(
                        f"model {name!r} already has version {version!r}", model=name
                    )
                path = model_target_path(name, version, "onnx")
                custom = target_custom(name, version, release)
                image.publish_signed_models(md, path, length, digest, custom, check_only=True)
                services.store.commit(tmp, digest)
                info = image.publish_signed_models(md, path, length, digest, custom)
                row = _record(session, name, version, release, info)
    public = VersionPublic.model_validate(row)
    detail = {"release": public.release, "sha256": public.sha256, "signed_by": "publisher"}
    session.add(AuditEntry(actor=actor, action="push", target=f"{name}:{public.version}",
                           detail=detail))  # fmt: skip
    session.commit()
    return public
