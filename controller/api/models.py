"""/v1/models: push and list model versions."""

from __future__ import annotations

from typing import Annotated

from edgefleet.controller import registry
from edgefleet.controller.api.deps import ActorNameDep, ServicesDep, SessionDep
from edgefleet.controller.models import AuditEntry, ModelsPublic, VersionPublic, VersionsPublic
from fastapi import APIRouter, Form, UploadFile

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.post("/{name}/versions", response_model=VersionPublic)
def push_version(
    name: str,
    *,
    file: UploadFile,
    session: SessionDep,
    services: ServicesDep,
    actor: ActorNameDep,
    version: Annotated[str | None, Form()] = None,
) -> VersionPublic:
    """Upload an ONNX model: validated, stored by content, signed into the image repo."""
    row = registry.push_version(
        session, services.store, services.signing, name, file.file, version=version or None
    )
    public = VersionPublic.model_validate(row)
    detail = {"release": public.release, "sha256": public.sha256}
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
    data = [VersionPublic.model_validate(r) for r in rows]
    return VersionsPublic(data=data, count=len(data))
