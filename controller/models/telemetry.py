"""Telemetry windows (raw and hourly aggregates) and device events."""

from __future__ import annotations

from datetime import datetime

from edgefleet.controller.models.base import UtcPublic
from edgefleet.controller.models.base import json_column as _json
from sqlalchemy import Column, DateTime, Index, text
from sqlmodel import Field, SQLModel

_HAS_FALLBACK = text("fallbacks > 0")


class TelemetryBase(SQLModel):
    device_id: str = Field(index=True, max_length=64)
    model: str | None = None
    version: str | None = None
    window_start: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    window_end: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    frames: int = 0
    drops: int = 0
    latency_edges_ms: list[float] = _json(list)
    latency_counts: list[int] = _json(list)
    confidence_edges: list[float] = _json(list)
    confidence_counts: list[int] = _json(list)
    per_class_confidence: dict[str, list[int]] = _json()
    detections: int = 0
    low_confidence: int = 0
    empty_frames: int | None = None  # frames with no detection (None: an older agent)
    fallbacks: int | None = None  # fell back to the previous model (None: an older agent)


class TelemetryWindowRow(TelemetryBase, table=True):
    __tablename__ = "telemetry_window"
    # The scheduler sums canaries' fallbacks every tick: rows with one are few, the rest many.
    __table_args__ = (
        Index("ix_telemetry_window_fallback", "window_start", postgresql_where=_HAS_FALLBACK,
              sqlite_where=_HAS_FALLBACK),
    )  # fmt: skip
    id: int | None = Field(default=None, primary_key=True)


class TelemetryWindowPublic(UtcPublic):
    device_id: str
    model: str | None
    version: str | None
    window_start: datetime
    window_end: datetime
    frames: int
    drops: int
    latency_edges_ms: list[float]
    latency_counts: list[int]
    confidence_edges: list[float]
    confidence_counts: list[int]
    per_class_confidence: dict[str, list[int]]
    detections: int
    low_confidence: int
    empty_frames: int | None = None
    fallbacks: int | None = None


class TelemetryWindowsPublic(SQLModel):
    data: list[TelemetryWindowPublic]
    count: int


class EventRow(SQLModel, table=True):
    __tablename__ = "event"
    id: int | None = Field(default=None, primary_key=True)
    device_id: str = Field(index=True, max_length=64)
    kind: str  # "phase" | "rejected"
    phase: str | None = None
    model: str | None = None
    version: str | None = None
    reason: str | None = None
    at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class TelemetryHourRow(TelemetryBase, table=True):
    """Raw windows past the retention age, summed per device, model version and hour.

    ``window_start`` is the hour; ``window_end`` the last summed window's end (inside the
    hour), so anything that buckets windows by their end at an hour or coarser puts an
    aggregate where its windows were (controller/retention.py).
    """

    __tablename__ = "telemetry_hour"
    id: int | None = Field(default=None, primary_key=True)
    windows: int = 0  # raw windows summed here
    # A Column belongs to one table: TelemetryBase's are the raw table's, so new ones here.
    window_start: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    window_end: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    latency_edges_ms: list[float] = _json(list)
    latency_counts: list[int] = _json(list)
    confidence_edges: list[float] = _json(list)
    confidence_counts: list[int] = _json(list)
    per_class_confidence: dict[str, list[int]] = _json()
