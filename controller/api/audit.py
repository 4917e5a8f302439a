"""/v1/audit: who did what to which rollout, newest first."""

from __future__ import annotations

from edgefleet.controller.api.deps import SessionDep
from edgefleet.controller.models.audit import AuditEntry, AuditPublic, AuditsPublic
from fastapi import APIRouter, Query
from sqlmodel import col, select

router = APIRouter(prefix="/v1/audit", tags=["audit"])


@router.get("", response_model=AuditsPublic)
def list_audit(
    session: SessionDep,
    target: str | None = None,
    limit: int = Query(default=200, ge=1, le=5000),
) -> AuditsPublic:
    stmt = select(AuditEntry).order_by(col(AuditEntry.id).desc()).limit(limit)
    if target:
        stmt = stmt.where(AuditEntry.target == target)
    data = [AuditPublic.model_validate(a) for a in session.exec(stmt).all()]
    return AuditsPublic(data=data, count=len(data))
