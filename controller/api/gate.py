"""The validation gate's routes: validation sets (``/v1/datasets``), a model's policy and a
version's verdict (``/v1/models/...``). The gate runs at push (api/models.py, api/publish.py)
and before a rollout (api/rollouts.py); the decision is controller/validation_gate.py."""

from __future__ import annotations

from typing import Any

from edgefleet.controller import registry
from edgefleet.controller.api.deps import ActorNameDep, ServicesDep, SessionDep, require
from edgefleet.controller.models.registry import (
    DatasetPublic,
    DatasetsPublic,
    ModelPolicy,
    ModelVersion,
    PolicyPublic,
)
from edgefleet.controller.rollouts.releases import source_of
from edgefleet.controller.services import Services
from edgefleet.controller.validation_gate import GatePolicy
from edgefleet.controller.validation_registry import (
    GateFolders,
    add_dataset,
    get_dataset,
    judge_push,
    list_datasets,
    set_policy,
)
from edgefleet.shared.errors import NotFoundError
from fastapi import APIRouter, UploadFile
from sqlmodel import Session

router = APIRouter(tags=["gate"])


def gate_folders(services: Services) -> GateFolders:
    return GateFolders(services.settings.data_dir)


def judge(session: Session, services: Services, row: ModelVersion) -> None:
    """The gate's verdict on a version just pushed (nothing when its model has no policy)."""
    judge_push(session, gate_folders(services), row, services.store.local_copy)


@router.post("/v1/datasets/{name}", response_model=DatasetPublic)
def post_dataset(
    name: str, file: UploadFile, session: SessionDep, services: ServicesDep, actor: ActorNameDep
) -> DatasetPublic:
    """Register a validation set: a tar of ``images/...`` and ``labels/...`` (``edgefleet
    dataset add`` packs it), kept by digest; the same images again change nothing."""
    row = add_dataset(session, gate_folders(services), name, file.file, actor)
    return DatasetPublic.model_validate(row)


@router.get("/v1/datasets", response_model=DatasetsPublic)
def get_datasets(session: SessionDep) -> DatasetsPublic:
    """Registered validation sets: name, digest, images (labelled), bytes, who added them."""
    data = [DatasetPublic.model_validate(r) for r in list_datasets(session)]
    return DatasetsPublic(data=data, count=len(data))


@router.get("/v1/datasets/{name}", response_model=DatasetPublic)
def get_one_dataset(name: str, session: SessionDep) -> DatasetPublic:
    """One registered validation set."""
    return DatasetPublic.model_validate(get_dataset(session, name))


@router.put(
    "/v1/models/{name}/policy", response_model=PolicyPublic, dependencies=[require("admin")]
)
def put_policy(
    name: str, policy: GatePolicy, session: SessionDep, actor: ActorNameDep
) -> PolicyPublic:
    """Set the model's validation gate (admin: loosening it is as much as an override)."""
    return PolicyPublic.model_validate(set_policy(session, name, policy, actor))


@router.get("/v1/models/{name}/policy", response_model=PolicyPublic)
def get_policy(name: str, session: SessionDep) -> PolicyPublic:
    """The model's validation gate (404 when it has none: versions are not judged)."""
    row = session.get(ModelPolicy, name)
    if row is None:
        raise NotFoundError(f"model {name!r} has no validation policy", model=name)
    return PolicyPublic.model_validate(row)


@router.get("/v1/models/{name}/versions/{version}/gate")
def get_gate(name: str, version: str, session: SessionDep) -> dict[str, Any]:
    """The gate's verdict at push; a re-signed copy (``v1-rb9``) answers with its source's."""
    row = source_of(session, registry.get_version(session, name, version))
    if row.gate_status is None:
        raise NotFoundError(f"{name}:{version} was pushed while its model had no policy")
    return {"name": name, "version": version, "from": row.version,
            "status": row.gate_status, **(row.gate or {})}  # fmt: skip
