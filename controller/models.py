"""Database tables and the public shapes the REST API answers with.

SQLModel families in the full-stack-fastapi-template manner: ``XBase`` holds the shared
fields, ``X(table=True)`` the row, ``XPublic`` what the API returns. List answers are
``{data, count}``. Datetimes are stored in UTC; SQLite drops the zone, so the public
shapes put it back.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from edgefleet.shared.protocol import utcnow
from pydantic import field_validator
from sqlalchemy import JSON, Column, DateTime, LargeBinary, UniqueConstraint
from sqlmodel import Field, SQLModel


def as_utc(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


def _json(default: Any = dict) -> Any:
    return Field(default_factory=default, sa_column=Column(JSON, nullable=False))


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


# --- models and versions -----------------------------------------------------------------


class Model(SQLModel, table=True):
    name: str = Field(primary_key=True, max_length=64)
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )


class VersionBase(SQLModel):
    name: str = Field(index=True, max_length=64)
    version: str = Field(max_length=64)
    release: int  # grows by one per model, never reused (TUF custom "release")
    sha256: str = Field(max_length=64)
    length: int  # bytes
    target: str  # TUF target path, models/<name>/<version>/model.onnx
    format: str = "onnx"


class ModelVersion(VersionBase, table=True):
    __tablename__ = "model_version"
    __table_args__ = (
        UniqueConstraint("name", "version", name="uq_version_label"),
        UniqueConstraint("name", "release", name="uq_version_release"),
    )
    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )
    # Where the bytes came from (controller/lineage.py); None for a push without it.
    lineage: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))


class VersionPublic(VersionBase, UtcPublic):
    created_at: datetime


class VersionsPublic(SQLModel):
    data: list[VersionPublic]
    count: int


class PlanBase(SQLModel):
    """A TensorRT plan of one version, built for one GPU, TensorRT release and precision."""

    name: str = Field(index=True, max_length=64)
    version: str = Field(max_length=64)
    compute_capability: str = Field(max_length=8)  # "8.7"
    tensorrt: str = Field(max_length=32)  # "10.3.0"
    precision: str = Field(max_length=8)  # fp32 | fp16 | int8
    sha256: str = Field(max_length=64)
    length: int  # bytes
    # "publisher", or "device:<id>" for a plan a device built and shared
    source: str = Field(default="publisher", max_length=80)
    # signed: listed for devices it fits; pending: shared by a device, waits for an operator
    state: str = Field(default="signed", max_length=16)
    target: str | None = None  # TUF target path once signed


class PlanArtifact(PlanBase, table=True):
    __tablename__ = "plan_artifact"
    __table_args__ = (
        UniqueConstraint(
            "name", "version", "compute_capability", "tensorrt", "precision", "sha256",
            name="uq_plan",
        ),
    )  # fmt: skip
    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )


class PlanPublic(PlanBase, UtcPublic):
    id: int
    created_at: datetime


class PlansPublic(SQLModel):
    data: list[PlanPublic]
    count: int


class ModelPublic(SQLModel):
    name: str
    latest_version: str | None
    versions: list[VersionPublic]


class ModelsPublic(SQLModel):
    data: list[ModelPublic]
    count: int


# --- devices -----------------------------------------------------------------------------


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


# --- rollouts ----------------------------------------------------------------------------


class RolloutCreate(SQLModel):
    model: str
    version: str
    selector: dict[str, str] = Field(default_factory=dict)


def _when(nullable: bool = True) -> Any:
    return Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=nullable))


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


class TufMetadata(SQLModel, table=True):
    """One TUF metadata file, when the controller keeps them in the database
    (``--tuf-store database``): ``repo`` is its folder under /tuf (``image/metadata``,
    ``director/<device>/metadata``), ``name`` the file name (signing/storage.py)."""

    __tablename__ = "tuf_metadata"
    repo: str = Field(primary_key=True, max_length=160)
    name: str = Field(primary_key=True, max_length=160)
    data: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    sha256: str = Field(max_length=64)  # of data: the ETag /tuf answers with


class TufLock(SQLModel, table=True):
    """The row whose UPDATE serialises TUF signing on SQLite (PostgreSQL: an advisory lock)."""

    __tablename__ = "tuf_lock"
    name: str = Field(primary_key=True, max_length=32)
    holds: int = 0  # how often it was taken (a counter the UPDATE needs something to change)


class SchedulerLease(SQLModel, table=True):
    """Who may advance rollouts: one holder at a time, until ``expires_at``; ``epoch``
    fences a holder that lost it (rollouts/lease.py)."""

    __tablename__ = "scheduler_lease"
    name: str = Field(primary_key=True, max_length=32)
    holder: str = Field(max_length=128)
    expires_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    # The fencing token: grows by one on every change of holder, never goes back.
    epoch: int = Field(default=1, sa_column_kwargs={"server_default": "1"})


class Channel(SQLModel, table=True):
    """A named version line (stable, latest, ...): devices pinned to it follow it. With no
    version it tracks the model's newest pushed version."""

    name: str = Field(primary_key=True, max_length=64)
    model: str = Field(max_length=64)
    version: str | None = Field(default=None, max_length=64)
    updated_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )


class ChannelPublic(UtcPublic):
    name: str
    model: str
    version: str | None
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


class RolloutsPublic(SQLModel):
    data: list[RolloutPublic]
    count: int


# --- telemetry and events ----------------------------------------------------------------


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


# --- the data loop: samples and drift alerts (issue 6) -----------------------------------


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


# --- trust: operator API tokens, enrollment tokens, device certificates ------------------


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


class SamplingRule(SQLModel, table=True):
    """Sampler settings for the devices whose labels match ``selector`` (first match wins)."""

    __tablename__ = "sampling_rule"
    id: int | None = Field(default=None, primary_key=True)  # the order rules are tried in
    selector: dict[str, str] = _json()  # label -> value, all must match; {} matches all
    settings: dict[str, Any] = _json()  # the agent's `sampling:` mapping
    updated_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )


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
