"""Rollouts, their stages and devices, and the lease that lets one controller advance them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from edgefleet.controller.models.base import UtcPublic, as_utc
from edgefleet.controller.models.base import json_column as _json
from edgefleet.controller.models.base import when_column as _when
from edgefleet.shared.protocol import utcnow
from pydantic import field_validator
from sqlalchemy import Column, DateTime
from sqlmodel import Field, SQLModel


class RolloutCreate(SQLModel):
    model: str
    version: str
    selector: dict[str, str] = Field(default_factory=dict)


class Rollout(SQLModel, table=True):
    """A rollout and where its scheduler is: the whole state lives in this row and its
    stages, so a restarted controller continues where it was."""

    id: int | None = Field(default=None, primary_key=True)
    model: str = Field(index=True)
    version: str
    selector: dict[str, str] = _json()
    # running | paused | failed | succeeded | aborted | rolled_back
    state: str = Field(default="running", index=True)
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )
    spec: dict[str, Any] = _json()  # RolloutSpec as given
    priority: int = 0
    stage: int = 0  # index of the current stage
    stage_started_at: datetime | None = _when()
    ready_at: datetime | None = _when()  # every device of the stage committed
    reason: str | None = None  # why it paused / failed / rolled back
    rollback_version: str | None = None  # the re-signed previous version, after a rollback


class RolloutDevice(SQLModel, table=True):
    __tablename__ = "rollout_device"
    rollout_id: int = Field(foreign_key="rollout.id", primary_key=True)
    device_id: str = Field(foreign_key="device.device_id", primary_key=True)
    director_version: int
    stage: int = 0  # stage that assigned it
    previous_model: str | None = None  # what it ran before (rollback target)
    previous_version: str | None = None
    assigned_at: datetime | None = _when()


class RolloutStage(SQLModel, table=True):
    """One stage of a rollout: when it ran, how it ended, its gates' last evaluation."""

    __tablename__ = "rollout_stage"
    rollout_id: int = Field(foreign_key="rollout.id", primary_key=True)
    index: int = Field(primary_key=True)
    started_at: datetime | None = _when()
    ended_at: datetime | None = _when()
    outcome: str = "pending"  # pending | successful | failed | inconclusive | promoted
    gates: list[dict[str, Any]] = _json(list)


class SchedulerLease(SQLModel, table=True):
    """Who may advance rollouts: one holder at a time, until ``expires_at``; ``epoch``
    fences a holder that lost it (rollouts/lease.py)."""

    __tablename__ = "scheduler_lease"
    name: str = Field(primary_key=True, max_length=32)
    holder: str = Field(max_length=128)
    expires_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    # The fencing token: grows by one on every change of holder, never goes back.
    epoch: int = Field(default=1, sa_column_kwargs={"server_default": "1"})


class RolloutDevicePublic(SQLModel):
    device_id: str
    stage: int = 0  # 0-based index into stages[] (shown as stage_number)
    stage_number: int = 1  # 1-based, as text and dashboard say "stage 1"
    online: bool = False
    phase: str | None
    model: str | None
    version: str | None
    done: bool
    failed: bool = False
    refused: str | None = None  # why it refused its assignment ("what: reason"), if it did


class StagePublic(UtcPublic):
    index: int  # 0-based position in stages[]
    number: int  # 1-based: what `rollout status` and the dashboard call "stage N"
    stage: str  # "1", "10%"
    devices: int  # devices the stage covers now
    started_at: datetime | None
    ended_at: datetime | None
    outcome: str
    gates: list[dict[str, Any]]

    @field_validator("started_at", "ended_at", mode="after")
    @classmethod
    def _zone2(cls, value: datetime | None) -> datetime | None:
        return as_utc(value)


class SkippedDevicePublic(SQLModel):
    device_id: str
    reason: str  # "pin 3 holds it to shapes:v1"


class RolloutPublic(UtcPublic):
    id: int
    model: str
    version: str
    selector: dict[str, str]
    state: str
    created_at: datetime
    devices: list[RolloutDevicePublic]
    total: int
    done: int
    failed: int
    stage: int = 0  # 0-based index of the current stage into stages[]
    stage_number: int = 1  # the same, 1-based: "stage 1" in text, JSON and dashboard
    stages: list[StagePublic] = []
    reason: str | None = None
    priority: int = 0
    matching: int = 0  # devices the selector matches now (canaries + control)
    rollback_version: str | None = None
    spec: dict[str, Any] = {}
    skipped: list[SkippedDevicePublic] = []  # matching devices a pin holds elsewhere
    waiting_for_window: datetime | None = None  # a closed window holds a device until then


class RolloutsPublic(SQLModel):
    data: list[RolloutPublic]
    count: int
