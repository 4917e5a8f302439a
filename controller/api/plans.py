"""TensorRT plans: the publisher pushes signed ones, devices share the ones they built.

* ``POST /v1/models/{name}/versions/{version}/plans``: a plan from the publisher's build
  farm, signed at once (operator);
* ``POST /v1/devices/{device_id}/plans``: a plan a device built, with the device's own
  upload credential; kept pending until ``POST /v1/plans/{id}/approve`` (operator);
* ``GET /v1/plans``: all of them, with where each came from and whether it is signed.
"""

from __future__ import annotations

from typing import Annotated

from edgefleet.controller import plans
from edgefleet.controller.api.deps import ActorNameDep, ServicesDep, SessionDep
from edgefleet.controller.api.samples import check_uploader
from edgefleet.controller.models.audit import AuditEntry
from edgefleet.controller.models.registry import PlanArtifact, PlanPublic, PlansPublic
from edgefleet.shared.engines import EngineFingerprint
from fastapi import APIRouter, Form, Header, UploadFile
from sqlmodel import Session

router = APIRouter(tags=["plans"])
device_router = APIRouter(tags=["plans"])  # its route checks the device's own credential


@router.post("/v1/models/{name}/versions/{version}/plans", response_model=PlanPublic)
def push_plan(  # noqa: PLR0917 - FastAPI passes these by name
    name: str,
    version: str,
    file: UploadFile,
    compute_capability: Annotated[str, Form()],
    tensorrt: Annotated[str, Form()],
    precision: Annotated[str, Form()],
    session: SessionDep,
    services: ServicesDep,
    actor: ActorNameDep,
) -> PlanPublic:
    """A plan of a published version, built for one GPU, TensorRT release and precision."""
    engine = EngineFingerprint(compute_capability, tensorrt, precision)
    row = plans.push_plan(
        session, services.store, services.signing,
        name=name, version=version, source=file.file, engine=engine,
    )  # fmt: skip
    return _audited(session, row, actor, "plan-push")


@device_router.post("/v1/devices/{device_id}/plans", response_model=PlanPublic)
def share_plan(  # noqa: PLR0917 - FastAPI passes these by name
    device_id: str,
    file: UploadFile,
    compute_capability: Annotated[str, Form()],
    tensorrt: Annotated[str, Form()],
    precision: Annotated[str, Form()],
    onnx_sha256: Annotated[str, Form()],
    session: SessionDep,
    services: ServicesDep,
    model: Annotated[str | None, Form()] = None,
    version: Annotated[str | None, Form()] = None,
    authorization: Annotated[str | None, Header()] = None,
) -> PlanPublic:
    """A plan this device built from an ONNX (``onnx_sha256``; ``model`` and ``version``
    when it knows them, else the newest version of those bytes); pending until approved."""
    check_uploader(session, services, device_id, authorization)
    engine = EngineFingerprint(compute_capability, tensorrt, precision, onnx_sha256)
    if model is None or version is None:
        found = plans.version_of_onnx(session, onnx_sha256)
        model, version = found.name, found.version
    row = plans.push_plan(
        session, services.store, None, name=model, version=version, source=file.file,
        engine=engine, origin=f"device:{device_id}",
    )  # fmt: skip
    return _audited(session, row, f"device:{device_id}", "plan-share")


@router.get("/v1/plans", response_model=PlansPublic)
def list_plans(
    session: SessionDep, model: str | None = None, version: str | None = None
) -> PlansPublic:
    rows = plans.list_plans(session, model, version)
    return PlansPublic(data=[PlanPublic.model_validate(r) for r in rows], count=len(rows))


@router.post("/v1/plans/{plan_id}/approve", response_model=PlanPublic)
def approve_plan(
    plan_id: int, session: SessionDep, services: ServicesDep, actor: ActorNameDep
) -> PlanPublic:
    """Sign a plan a device shared: every device of its fingerprint gets it from now on."""
    row = plans.approve_plan(session, services.store, services.signing, plan_id)
    return _audited(session, row, actor, "plan-approve")


def _audited(session: Session, row: PlanArtifact, actor: str, action: str) -> PlanPublic:
    public = PlanPublic.model_validate(row)
    detail = {"id": public.id, "sha256": public.sha256, "state": public.state,
              "fingerprint": f"sm{public.compute_capability}-trt{public.tensorrt}-"
                             f"{public.precision}"}  # fmt: skip
    session.add(AuditEntry(actor=actor, action=action,
                           target=f"{public.name}:{public.version}", detail=detail))  # fmt: skip
    session.commit()
    return public
