"""Drift alerts and the captured baselines they are judged against."""

from __future__ import annotations

from datetime import datetime

from edgefleet.controller.models.base import json_column as _json
from edgefleet.controller.models.base import when_column as _when
from edgefleet.shared.protocol import utcnow
from sqlalchemy import Column, DateTime, UniqueConstraint
from sqlmodel import Field, SQLModel


class AlertRow(SQLModel, table=True):
    """A drift alert: fired when a metric stays above its threshold, resolved with hysteresis."""

    __tablename__ = "alert"
    id: int | None = Field(default=None, primary_key=True)
    scope: str = Field(index=True, max_length=128)  # device:<id> | site:<v> | label:<k>=<v> | fleet
    device_id: str | None = Field(default=None, max_length=64)
    model: str | None = None
    version: str | None = None
    metric: str = Field(max_length=32)
    value: float
    threshold: float
    state: str = Field(default="firing", index=True)  # firing | resolved
    fired_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    resolved_at: datetime | None = _when()
    labels: dict[str, str] = _json()
    baseline: str | None = Field(default=None, max_length=16)  # card | captured
    reason: str | None = Field(default=None, max_length=32)  # resolved: clear | version | quiet


class DriftBaselineRow(SQLModel, table=True):
    """A captured drift baseline: the first ``size`` windows a model version sent in one
    alert scope, summed. Kept so that a restart judges against the same reference."""

    __tablename__ = "drift_baseline"
    __table_args__ = (UniqueConstraint("scope", "model", "version", "size", name="uq_baseline"),)
    id: int | None = Field(default=None, primary_key=True)
    scope: str = Field(max_length=128)
    model: str = Field(max_length=128)
    version: str = Field(max_length=128)
    size: int  # windows wanted
    windows: int = 0  # windows summed so far (complete at size)
    frames: int = 0
    detections: int = 0
    empty_frames: int | None = None
    confidence_edges: list[float] = _json(list)
    confidence_counts: list[int] = _json(list)
    updated_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )
