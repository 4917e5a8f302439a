"""/v1/alerts: drift alerts, firing and resolved."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from edgefleet.controller.api.deps import SessionDep
from edgefleet.controller.models.alerts import AlertRow
from edgefleet.controller.models.base import UtcPublic, as_utc
from fastapi import APIRouter, Query
from pydantic import field_validator
from sqlmodel import SQLModel, col, select

router = APIRouter(prefix="/v1/alerts", tags=["alerts"])


class AlertPublic(UtcPublic):
    id: int
    scope: str
    device_id: str | None
    model: str | None
    version: str | None
    metric: str
    value: float
    threshold: float
    state: str
    fired_at: datetime
    resolved_at: datetime | None
    labels: dict[str, str]
    baseline: str | None
    reason: str | None

    @field_validator("fired_at", "resolved_at", mode="after")
    @classmethod
    def _zone3(cls, value: datetime | None) -> datetime | None:
        return as_utc(value)


class AlertsPublic(SQLModel):
    data: list[AlertPublic]
    count: int


@router.get("", response_model=AlertsPublic)
def list_alerts(
    session: SessionDep,
    state: Annotated[str | None, Query(pattern="^(firing|resolved)$")] = None,
    limit: Annotated[int, Query(ge=1, le=10000)] = 200,
    scope: Annotated[str | None, Query(max_length=128)] = None,
    version: Annotated[str | None, Query(max_length=128)] = None,
) -> AlertsPublic:
    stmt = select(AlertRow).order_by(col(AlertRow.id).desc()).limit(limit)
    if state:
        stmt = stmt.where(AlertRow.state == state)
    if scope:
        stmt = stmt.where(AlertRow.scope == scope)
    if version:
        stmt = stmt.where(AlertRow.version == version)
    rows = session.exec(stmt).all()
    return AlertsPublic(data=[AlertPublic.model_validate(r) for r in rows], count=len(rows))
