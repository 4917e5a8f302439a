"""/v1/samples: devices upload frames (multipart); viewers list them, operators see the frames."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from edgefleet.controller import samples as store_mod
from edgefleet.controller.api.deps import ServicesDep, SessionDep, require
from edgefleet.controller.enrollment import is_enrolled, upload_device
from edgefleet.controller.models.base import UtcPublic
from edgefleet.controller.models.samples import SampleRow
from edgefleet.controller.services import Services
from edgefleet.shared.errors import ForbiddenError, ProtocolError
from fastapi import APIRouter, Form, Header, HTTPException, Query, UploadFile
from fastapi.responses import Response
from sqlmodel import Session, SQLModel

router = APIRouter(prefix="/v1/samples", tags=["samples"])
DEVICE_HEADER = "X-Edgefleet-Device"


class SamplePublic(UtcPublic):
    id: int
    device_id: str
    uid: str
    model: str | None
    version: str | None
    strategy: str
    reason: str
    captured_at: datetime
    received_at: datetime
    width: int
    height: int
    bytes: int
    labels: dict[str, str]
    detections: list[dict[str, Any]]
    candidates: list[dict[str, Any]]


class SamplesPublic(SQLModel):
    data: list[SamplePublic]
    count: int


def sample_store(services: Services) -> store_mod.SampleStore:
    return store_mod.SampleStore(services.settings.data_dir / "samples")


def check_uploader(
    session: Session, services: Services, device_id: str, authorization: str | None
) -> None:
    """With ``--auth``, or for an enrolled device, the upload must carry that device's own
    upload credential (issued at enrollment): 401 without one, 403 for another device's or
    a revoked one. An unenrolled device on a controller without auth uploads as before."""
    scheme, _, secret = (authorization or "").partition(" ")
    secret = secret.strip() if scheme.lower() == "bearer" else ""
    if not secret:
        if not getattr(services.settings, "auth", False) and not is_enrolled(session, device_id):
            return
        raise HTTPException(401, f"sample upload of {device_id} needs its upload credential "
                            "(Authorization: Bearer, from `edgefleet agent enroll`)",
                            headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
    owner = upload_device(session, secret)
    if owner != device_id:
        raise ForbiddenError(f"the upload credential is not {device_id}'s (unknown, "
                             "revoked or another device's)")  # fmt: skip


# A plain ``def``: it reads the spooled file and writes the database, so it runs on the
# threadpool, never on the event loop.
@router.post("", response_model=SamplePublic)
def upload(  # noqa: PLR0917 - FastAPI passes these by name
    image: UploadFile,
    meta: Annotated[str, Form()],
    session: SessionDep,
    services: ServicesDep,
    x_edgefleet_device: Annotated[str, Header()],
    response: Response,
    authorization: Annotated[str | None, Header()] = None,
) -> SamplePublic:
    """One frame and its sidecar; the same ``uid`` sent twice is stored once (200, not 201)."""
    parsed = store_mod.parse_meta(meta, x_edgefleet_device)
    check_uploader(session, services, parsed.device_id, authorization)
    data = image.file.read(store_mod.MAX_SAMPLE_BYTES + 1)
    row, created = sample_store(services).add(session, parsed, data)
    response.status_code = 201 if created else 200
    return SamplePublic.model_validate(row)


@router.get("", response_model=SamplesPublic, dependencies=[require("viewer")])
def list_samples(  # noqa: PLR0917 - FastAPI passes these by name
    session: SessionDep,
    device_id: str | None = None,
    label: Annotated[list[str] | None, Query(description="KEY=VALUE, repeatable")] = None,
    model: str | None = None,
    version: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    rejected: store_mod.Rejected = "include",
    limit: Annotated[int, Query(ge=1, le=10000)] = 100,
) -> SamplesPublic:
    """Newest first. ``rejected=exclude`` leaves out versions whose latest rollout failed,
    was rolled back or aborted; ``only`` lists just those."""
    labels = {}
    for item in label or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ProtocolError(f"label must be KEY=VALUE, got {item!r}")
        labels[key] = value
    where = store_mod.SampleFilter(device_id=device_id, labels=labels, model=model,
                                   version=version, since=since, until=until,
                                   rejected=rejected)  # fmt: skip
    rows = store_mod.list_samples(session, limit=limit, where=where)
    return SamplesPublic(data=[SamplePublic.model_validate(r) for r in rows], count=len(rows))


@router.get("/{sample_id}", response_model=SamplePublic, dependencies=[require("viewer")])
def get_sample(sample_id: int, session: SessionDep) -> SamplePublic:
    row: SampleRow = store_mod.get_sample(session, sample_id)
    return SamplePublic.model_validate(row)


# Camera frames: operators and admins only (docs/TRUST.md, "Who reads what").
@router.get("/{sample_id}/image", dependencies=[require("operator")])
def get_image(sample_id: int, session: SessionDep, services: ServicesDep) -> Response:
    data = sample_store(services).image(session, sample_id)
    return Response(data, media_type="image/jpeg")
