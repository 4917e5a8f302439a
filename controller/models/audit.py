"""The audit log: who did what, on which target, when."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from edgefleet.controller.models.base import UtcPublic
from edgefleet.controller.models.base import json_column as _json
from edgefleet.shared.protocol import utcnow
from sqlalchemy import Column, DateTime
from sqlmodel import Field, SQLModel


class AuditEntry(SQLModel, table=True):
    """Every operator or scheduler action: who, what, on which target, when."""

    __tablename__ = "audit"
    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )
    actor: str = Field(max_length=128)
    action: str = Field(max_length=32)
    target: str = Field(max_length=128)
    detail: dict[str, Any] = _json()


class AuditPublic(UtcPublic):
    id: int
    at: datetime
    actor: str
    action: str
    target: str
    detail: dict[str, Any]


class AuditsPublic(SQLModel):
    data: list[AuditPublic]
    count: int
