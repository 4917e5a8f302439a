"""/v1/models: push and list model versions, and read a version's lineage."""

from __future__ import annotations

import json
from typing import Annotated, Any

from edgefleet.controller import registry
from edgefleet.controller.api.deps import ActorNameDep, ServicesDep, SessionDep
from edgefleet.controller.api.gate import judge
from edgefleet.controller.models.audit import AuditEntry
from edgefleet.controller.models.registry import ModelsPublic, VersionPublic, VersionsPublic
from edgefleet.shared.errors import ArtifactError, NotFoundError
from fastapi import APIRouter, Form, UploadFile

router = APIRouter(prefix="/v1/models", tags=["models"])
MAX_LINEAGE_BYTES = 64 * 1024 * 1024  # a manifest of a few hundred thousand files


def read_lineage(upload: UploadFile | None, actor: str) -> dict[str, Any] | None:
    """The ``lineage`` part of a push (a JSON object from controller/lineage.py), with
    ``pushed_by`` set here from the authenticated caller, not taken from the client."""
    if upload is None:
        return None
    raw = upload.file.read(MAX_LINEAGE_BYTES + 1)
    if len(raw) > MAX_LINEAGE_BYTES:
        raise ArtifactError(f"lineage larger than {MAX_LINEAGE_BYTES} bytes")
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(f"lineage is not JSON: {e}") from e
    if not isinstance(doc, dict):
        raise ArtifactError("lineage must be a JSON object")
    doc["pushed_by"] = actor
    return doc


@router.post("/{name}/versions", response_model=VersionPublic)
def push_version(
    name: str,
    *,
    file: UploadFile,
    session: SessionDep,
    services: ServicesDep,
    actor: ActorNameDep,
    version: Annotated[str | None, Form()] = None,
    lineage: UploadFile | None = None,
) -> VersionPublic:
    """Upload an ONNX model: validated, stored by content, signed into the image repo;
    an optional ``lineage`` JSON part is kept on the version. With a validation policy
    the version is judged on its set before the answer (``gate_status``, ``gate``)."""
    doc = read_lineage(lineage, actor)
    row = registry.push_version(
        session, services.store, services.signing, name, file.file, version=version or None,
        lineage=doc,
    )  # fmt: skip
    judge(session, services, row)
    public = VersionPublic.model_validate(row)
    detail = {"release": public.release, "sha256": public.sha256, "gate": public.gate_status}
    session.add(AuditEntry(actor=actor, action="push", target=f"{name}:{public.version}",
                           detail=detail))  # fmt: skip
    session.commit()
    return public


@router.get("", response_model=ModelsPublic)
def list_models(session: SessionDep) -> ModelsPublic:
    data = registry.list_models(session)
    return ModelsPublic(data=data, count=len(data))


@router.get("/{name}/versions", response_model=VersionsPublic)
def list_versions(name: str, session: SessionDep) -> VersionsPublic:
    rows = registry.list_versions(session, name)
    data = registry.public_versions(rows)
    return VersionsPublic(data=data, count=len(data))


@router.get("/{name}/versions/{version}/lineage")
def get_lineage(name: str, version: str, session: SessionDep) -> dict[str, Any]:
    """Where a version came from, as recorded at push (``model show``, ``model diff``); a
    re-signed copy (``v1-rb9``: same bytes) answers with its source's, ``from`` naming it."""
    from edgefleet.controller.rollouts.releases import source_of

    row = registry.get_version(session, name, version)
    source = source_of(session, row)
    if source.lineage is None:
        raise NotFoundError(f"{name}:{source.version} was pushed without lineage", model=name)
    public = VersionPublic.model_validate(row)
    return {"name": name, "version": version, "release": public.release,
            "sha256": public.sha256, "created_at": public.created_at.isoformat(),
            "from": source.version, "lineage": source.lineage}  # fmt: skip
