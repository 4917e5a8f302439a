"""Pins and channels: devices held to a version, or following a named version line."""

from __future__ import annotations

from datetime import datetime

from edgefleet.controller.models.base import UtcPublic
from edgefleet.controller.models.base import json_column as _json
from edgefleet.shared.protocol import utcnow
from sqlalchemy import Column, DateTime
from sqlmodel import Field, SQLModel


class Channel(SQLModel, table=True):
    """A named version line (stable, latest, ...): devices pinned to it follow it. With a
    stage it tracks the model's version in that registry stage; with neither version nor
    stage, the model's newest pushed version."""

    name: str = Field(primary_key=True, max_length=64)
    model: str = Field(max_length=64)
    version: str | None = Field(default=None, max_length=64)
    # Follow the model's version in this registry stage (production, ...) instead.
    stage: str | None = Field(default=None, max_length=16)
    updated_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )


class ChannelPublic(UtcPublic):
    name: str
    model: str
    version: str | None
    stage: str | None = None  # the registry stage it follows (None: version or newest)
    resolved: str | None  # model:version it stands for now (None: no version pushed yet)
    updated_at: datetime


class ChannelsPublic(SQLModel):
    data: list[ChannelPublic]
    count: int


class PinCreate(SQLModel):
    """Devices whose labels match ``selector`` (``device_id`` matches the id) run exactly
    ``model:version``, or follow ``channel``; rollouts that would move them off skip them."""

    selector: dict[str, str] = Field(default_factory=dict)
    model: str | None = None
    version: str | None = None
    channel: str | None = None


class Pin(SQLModel, table=True):
    # Never reuse an id after a delete: the audit log's "pin/3" must mean one pin.
    __table_args__ = {"sqlite_autoincrement": True}

    id: int | None = Field(default=None, primary_key=True)
    selector: dict[str, str] = _json()
    model: str | None = Field(default=None, max_length=64)
    version: str | None = Field(default=None, max_length=64)
    channel: str | None = Field(default=None, max_length=64)
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )
    created_by: str = Field(default="unknown", max_length=128)


class PinPublic(UtcPublic):
    id: int
    selector: dict[str, str]
    model: str | None
    version: str | None
    channel: str | None
    created_at: datetime
    created_by: str
    devices: list[str]  # devices this pin holds now


class PinsPublic(SQLModel):
    data: list[PinPublic]
    count: int
