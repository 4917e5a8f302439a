"""Frames devices send back, and the sampling rules that tell them which."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from edgefleet.controller.models.base import json_column as _json
from edgefleet.shared.protocol import utcnow
from sqlalchemy import Column, DateTime, UniqueConstraint
from sqlmodel import Field, SQLModel


class SampleRow(SQLModel, table=True):
    """A frame a device sent back (controller/samples.py keeps the JPEG on disk)."""

    __tablename__ = "sample"
    __table_args__ = (UniqueConstraint("device_id", "uid", name="uq_sample_uid"),)
    id: int | None = Field(default=None, primary_key=True)
    device_id: str = Field(index=True, max_length=64)
    uid: str = Field(max_length=64)  # the device's id for it: a retried upload is stored once
    model: str | None = None
    version: str | None = None
    strategy: str = Field(max_length=64)
    reason: str = Field(max_length=256)
    captured_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    received_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )
    width: int = 0
    height: int = 0
    bytes: int = 0
    sha256: str = Field(max_length=64)
    labels: dict[str, str] = _json()  # the device's labels when it arrived (site, store)
    detections: list[dict[str, Any]] = _json(list)
    candidates: list[dict[str, Any]] = _json(list)  # below the confidence cut


class SamplingRule(SQLModel, table=True):
    """Sampler settings for the devices whose labels match ``selector`` (first match wins)."""

    __tablename__ = "sampling_rule"
    id: int | None = Field(default=None, primary_key=True)  # the order rules are tried in
    selector: dict[str, str] = _json()  # label -> value, all must match; {} matches all
    settings: dict[str, Any] = _json()  # the agent's `sampling:` mapping
    updated_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )
