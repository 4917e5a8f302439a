"""/v1/drift: confidence drift per model version, label (site, store) or device, over time."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from edgefleet.controller.api.cards import card_store
from edgefleet.controller.api.deps import ServicesDep, SessionDep
from edgefleet.controller.drift_report import drift_report
from fastapi import APIRouter, Query

router = APIRouter(prefix="/v1/drift", tags=["drift"])


@router.get("")
def get_drift(
    *,
    session: SessionDep,
    services: ServicesDep,
    group_by: Annotated[str, Query(max_length=80)] = "model_version",
    since: datetime | None = None,
    bucket_s: Annotated[int, Query(ge=0, le=86400)] = 60,
    model: str | None = None,
) -> dict[str, Any]:
    """``group_by``: ``model_version``, ``device``, or a device label (``site``, ``store``,
    ``label:site``). ``bucket_s`` 0 sums the whole span into one point per group."""
    data = drift_report(session, card_store(services), group_by=group_by, since=since,
                        bucket_s=bucket_s, model=model)  # fmt: skip
    return {"group_by": group_by, "data": data, "count": len(data)}
