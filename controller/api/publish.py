"""/v1/models/{name}/signed: a push whose ``models`` metadata the publisher signed.

``edgefleet model push NAME FILE --key FILE`` asks ``next-release`` for the release and
version the controller will record, signs the ``models`` role on the publisher's machine
(controller/signing/publisher.py) and uploads the artifact with the signed metadata. The
controller verifies the signature against the delegation in its ``targets`` role, the
version (current + 1), the unchanged existing targets and the new target's length and
hash against the uploaded bytes, then publishes it with a new snapshot and timestamp.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from edgefleet.controller import registry
from edgefleet.controller.api.deps import ActorNameDep, ServicesDep, SessionDep
from edgefleet.controller.api.gate import judge
from edgefleet.controller.api.models import read_lineage
from edgefleet.controller.models.audit import AuditEntry
from edgefleet.controller.models.registry import VersionPublic
from edgefleet.controller.signing.publisher import MAX_METADATA_BYTES, parse_models
from edgefleet.controller.signing.targets import TargetInfo, model_target_path, target_custom
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
    registry.check_label("model name", name)
    release = registry.next_release(session, name)
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
    lineage: UploadFile | None = None,
) -> VersionPublic:
    """Upload an ONNX model with the ``models`` metadata that signs it (and its lineage)."""
    registry.check_label("model name", name)
    if version is not None:
        registry.check_label("version", version)
    raw = metadata.file.read(MAX_METADATA_BYTES + 1)
    if len(raw) > MAX_METADATA_BYTES:
        raise TrustError(f"models metadata larger than {MAX_METADATA_BYTES} bytes")
    md = parse_models(raw)
    doc = read_lineage(lineage, actor)
    image = _image(services)

    def sign(tmp: Path, digest: str, length: int, version: str, release: int) -> TargetInfo:
        path = model_target_path(name, version, "onnx")
        custom = target_custom(name, version, release)
        image.publish_signed_models(md, path, length, digest, custom, check_only=True)
        services.store.commit(tmp, digest)
        return image.publish_signed_models(md, path, length, digest, custom)  # type: ignore[no-any-return]

    row = registry.push_onnx(session, services.store, name, file.file, version=version, sign=sign,
                             lineage=doc)  # fmt: skip
    judge(session, services, row)
    public = VersionPublic.model_validate(row)
    detail = {"release": public.release, "sha256": public.sha256, "signed_by": "publisher",
              "gate": public.gate_status}  # fmt: skip
    session.add(AuditEntry(actor=actor, action="push", target=f"{name}:{public.version}",
                           detail=detail))  # fmt: skip
    session.commit()
    return public
