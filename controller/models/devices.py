"""Devices and their trust: enrollment tokens, certificates, revocations, upload credentials."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from edgefleet.controller.models.base import UtcPublic
from edgefleet.controller.models.base import json_column as _json
from edgefleet.controller.models.base import when_column as _when
from edgefleet.shared.protocol import utcnow
from sqlalchemy import JSON, Column, DateTime
from sqlmodel import Field, SQLModel


class DeviceBase(SQLModel):
    device_id: str = Field(primary_key=True, max_length=64)
    online: bool = False
    model: str | None = None
    version: str | None = None
    phase: str | None = None
    error: str | None = None
    desired_model: str | None = None
    desired_version: str | None = None


class Device(DeviceBase, table=True):
    labels: dict[str, str] = _json()
    fingerprint: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    agent_version: str | None = None
    last_seen: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    director_version: int | None = None  # last director metadata version we hinted
    # The last version this device reported as reverted / failed (from its events).
    failed_model: str | None = None
    failed_version: str | None = None
    # What last set desired_*: "rollout/5", "rollout/5:rollback", "rollout/5:abort",
    # "pin/3", "pin/3:stable" (the fleet view's BY; kept after the pin is deleted).
    desired_set_by: str | None = Field(default=None, max_length=128)  # a 64-char channel fits


class DevicePublic(DeviceBase, UtcPublic):
    labels: dict[str, str]
    last_seen: datetime | None
    fingerprint: dict[str, Any] | None = None  # what it reported: platform, GPU, TensorRT
    agent_version: str | None = None
    # Reported: the release of the version it runs, and when it last reported a phase.
    release: int | None = None
    since: datetime | None = None
    # Desired: which rule won ("pin/3", "pin/3:stable", "rollout/5"), and why the device
    # does not run it ("offline", "refused: ...", "older release: ...", "window closed ...").
    desired_by: str | None = None
    waiting: str | None = None


class DevicesPublic(SQLModel):
    data: list[DevicePublic]
    count: int


class EnrollToken(SQLModel, table=True):
    """A one-time enrollment token for one device id (sha256 of the secret only)."""

    __tablename__ = "enroll_token"
    sha256: str = Field(primary_key=True, max_length=64)
    device_id: str = Field(index=True, max_length=64)
    expires_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    used_at: datetime | None = _when()
    created_by: str = Field(max_length=128)


class DeviceCert(SQLModel, table=True):
    """A certificate the controller signed for a device at enrollment."""

    __tablename__ = "device_cert"
    serial: str = Field(primary_key=True, max_length=64)
    device_id: str = Field(index=True, max_length=64)
    pem: str
    issued_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )


class DeviceRevocation(SQLModel, table=True):
    """A revoked device: its certificates are in the CRL and the controller ignores it."""

    __tablename__ = "device_revocation"
    device_id: str = Field(primary_key=True, max_length=64)
    at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )
    actor: str = Field(max_length=128)


class UploadCredential(SQLModel, table=True):
    """A device's sample-upload credential, issued at enrollment (sha256 of the secret only)."""

    __tablename__ = "upload_credential"
    device_id: str = Field(primary_key=True, max_length=64)
    sha256: str = Field(unique=True, max_length=64)
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )
    revoked_at: datetime | None = _when()
