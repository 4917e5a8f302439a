"""Operators' API tokens."""

from __future__ import annotations

from datetime import datetime

from edgefleet.controller.models.base import UtcPublic
from edgefleet.controller.models.base import when_column as _when
from edgefleet.shared.protocol import utcnow
from sqlalchemy import Column, DateTime
from sqlmodel import Field, SQLModel


class ApiToken(SQLModel, table=True):
    """An operator's API token: only the sha256 of its secret is kept."""

    __tablename__ = "api_token"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, max_length=64)
    role: str = Field(max_length=16)  # viewer | operator | admin
    sha256: str = Field(unique=True, max_length=64)
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )
    revoked_at: datetime | None = _when()


class TokenPublic(UtcPublic):
    name: str
    role: str
    created_at: datetime
    revoked_at: datetime | None = None


class TokensPublic(SQLModel):
    data: list[TokenPublic]
    count: int
