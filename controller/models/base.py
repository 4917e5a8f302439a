"""What every aggregate's tables and public shapes share.

SQLModel families in the full-stack-fastapi-template manner: ``XBase`` holds the shared
fields, ``X(table=True)`` the row, ``XPublic`` what the API returns. List answers are
``{data, count}``. Datetimes are stored in UTC; SQLite drops the zone, so the public
shapes put it back.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from pydantic import field_validator
from sqlalchemy import JSON, Column, DateTime
from sqlmodel import Field, SQLModel


def as_utc(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


def json_column(default: Any = dict) -> Any:
    return Field(default_factory=default, sa_column=Column(JSON, nullable=False))


def when_column(nullable: bool = True) -> Any:
    return Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=nullable))


class UtcPublic(SQLModel):
    @field_validator(
        "created_at",
        "last_seen",
        "window_start",
        "window_end",
        "at",
        mode="after",
        check_fields=False,
    )
    @classmethod
    def _zone(cls, value: datetime | None) -> datetime | None:
        return as_utc(value)
