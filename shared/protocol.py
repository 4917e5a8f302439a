"""The wire protocol between controller and agents (MQTT payloads, JSON).

Every payload carries ``schema``. Parsing goes through :func:`decode`, which turns any
malformed, oversize or unknown payload into a :class:`ProtocolError` so callers can
count and drop it. Events are a discriminated union on ``event``.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from enum import Enum
from typing import Annotated, Any, Literal, TypeVar

from edgefleet.shared.errors import ProtocolError
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)

SCHEMA_VERSION = 1
MAX_PAYLOAD_BYTES = 256 * 1024  # bytes; telemetry windows are a few KiB
MAX_JSON_DEPTH = 16


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Phase(str, Enum):
    """Where a device is in installing a model (DESIGN.md, "install without downtime")."""

    IDLE = "IDLE"
    DOWNLOADING = "DOWNLOADING"
    VERIFIED = "VERIFIED"
    PREPARING = "PREPARING"
    WARMING = "WARMING"
    SHADOW = "SHADOW"
    SWAPPED = "SWAPPED"
    HEALTH_CHECK = "HEALTH_CHECK"
    COMMITTED = "COMMITTED"
    REVERTED = "REVERTED"
    FAILED = "FAILED"


class _Wire(BaseModel):
    # JSON has no infinity or NaN: refuse them when a message is built, not at the far end.
    model_config = ConfigDict(extra="ignore", frozen=True, allow_inf_nan=False)
    schema_version: int = Field(default=SCHEMA_VERSION, alias="schema")

    def to_bytes(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()


class Fingerprint(BaseModel):
    """What a device is, as far as choosing an artifact goes."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    arch: str  # x86_64, aarch64
    platform: str = "cpu"  # cpu, jetson, cuda
    jetpack: str | None = None
    tensorrt: str | None = None
    compute_capability: str | None = None  # "8.7"
    onnxruntime: str | None = None
    profile: str | None = None  # firmware_profiles/<name>.yaml


class DesiredHint(_Wire):
    """Retained on ``desired``: "your director metadata changed". Carries no trust."""

    director_version: int
    issued_at: datetime = Field(default_factory=utcnow)


class Command(_Wire):
    """``refresh``: look at the director now. ``drift``: a drift alert fired on a scope
    holding this device; its sampler treats the scene as changed for ``hold_s`` seconds
    (None: its own ``sampling.drift.hold_s``). ``settings``: the sampling settings that
    may apply to this device changed, ask for them now. ``card``: the model card of
    ``model`` ``version`` arrived, ask for it now if it was missing. Announcements carry
    no trust: the device fetches over HTTP as always. An agent that predates a command
    counts and drops it as malformed (``drift``, ``settings`` and ``card`` were added
    after ``refresh``)."""

    command: Literal["refresh", "drift", "settings", "card"]
    issued_at: datetime = Field(default_factory=utcnow)
    hold_s: float | None = Field(default=None, gt=0, le=86400)  # seconds
    model: str | None = Field(default=None, min_length=1, max_length=128)  # ``card`` only
    version: str | None = Field(default=None, min_length=1, max_length=128)  # ``card`` only

    @model_validator(mode="after")
    def _card_names_its_version(self) -> Command:
        if self.command == "card" and (self.model is None or self.version is None):
            raise ValueError("a card command names its model and version")
        return self


class IngestPressure(_Wire):
    """Retained on ``FLEET_INGEST`` (shared/topics.py): ``hold=True`` while the controller's
    ingest is behind; agents then keep new telemetry windows in their disk spool instead
    of sending them. A hold is bounded twice so a stale one can never stop telemetry for
    good: it ends ``seconds`` after the agent receives it (the controller renews it while
    still behind, and publishes it with the same MQTT message expiry) and at ``until``.
    ``hold=False`` lifts it at once."""

    hold: bool
    until: datetime | None = None  # wall clock; an agent past it sends again
    seconds: float = Field(default=0.0, ge=0, le=3600)  # the hold's length from receipt
    issued_at: datetime = Field(default_factory=utcnow)


class DeviceState(_Wire):
    """Retained on ``state``: the device's own account of what it runs."""

    device_id: str
    model: str | None = None
    version: str | None = None
    target: str | None = None  # TUF target path of the running artifact
    sha256: str | None = None
    phase: Phase = Phase.IDLE
    error: str | None = None
    # ``error`` is a transient fault (the controller or broker unreachable, a download cut
    # off, a timeout) that the agent retries with backoff: the install is still in
    # progress, not failed. Added after schema 1 shipped: older peers ignore the field.
    transient: bool = False
    labels: dict[str, str] = Field(default_factory=dict)
    fingerprint: Fingerprint | None = None
    agent_version: str | None = None
    updated_at: datetime = Field(default_factory=utcnow)


class Status(_Wire):
    """Retained on ``status``, and the Last Will with ``online=False``."""

    device_id: str
    online: bool
    at: datetime = Field(default_factory=utcnow)


class PhaseEvent(_Wire):
    """One install step. ``transient=True``: ``phase`` was cut short by a fault the agent
    retries with backoff (``reason`` says which); the install goes on and is no failure.
    The agent then reports the phase it was in (never FAILED), so a controller that
    predates the field sees an install still in progress."""

    event: Literal["phase"] = "phase"
    device_id: str
    phase: Phase
    model: str | None = None
    version: str | None = None
    reason: str | None = None
    transient: bool = False
    at: datetime = Field(default_factory=utcnow)


class RejectedEvent(_Wire):
    """The agent refused something (bad metadata, bad payload) and kept serving."""

    event: Literal["rejected"] = "rejected"
    device_id: str
    what: str
    reason: str
    at: datetime = Field(default_factory=utcnow)


Event = Annotated[PhaseEvent | RejectedEvent, Field(discriminator="event")]
_EVENT_ADAPTER: TypeAdapter[PhaseEvent | RejectedEvent] = TypeAdapter(Event)


class TelemetryWindow(_Wire):
    device_id: str
    model: str | None = None
    version: str | None = None
    window_start: datetime
    window_end: datetime
    frames: int = 0
    drops: int = 0
    latency_edges_ms: list[float]
    latency_counts: list[int]
    confidence_edges: list[float]
    confidence_counts: list[int]  # all detections, every class
    per_class_confidence: dict[str, list[int]] = Field(default_factory=dict)
    detections: int = 0
    low_confidence: int = 0  # detections below the low-confidence cut
    empty_frames: int | None = Field(default=None, ge=0)  # frames without a detection
    # Fallback events in this window: the committed model would not load and the device
    # fell back to the one before it (None: an older agent). Counted against a canary.
    fallbacks: int | None = Field(default=None, ge=0)
    # Drift of confidence_counts against the running model's card (None: no baseline yet).
    drift_psi: float | None = None  # population stability index
    drift_js: float | None = None  # Jensen-Shannon distance, base 2 (scipy's jensenshannon)
    drift_wasserstein: float | None = None  # Wasserstein-1 on the confidence axis

    @property
    def detections_per_frame(self) -> float:
        return self.detections / self.frames if self.frames else 0.0


M = TypeVar("M", bound=_Wire)


def _depth(obj: Any, limit: int) -> int:
    """Nesting depth of parsed JSON (a scalar is 1), or the first depth past ``limit``.

    Only containers are pushed: a non-empty one's children sit one level down whatever
    they are, so the numbers of a histogram are never visited one by one (this runs on
    every message the controller ingests).
    """
    if not isinstance(obj, (dict, list)):
        return 1
    stack: list[tuple[Any, int]] = [(obj, 1)]
    deepest = 1
    while stack:
        node, d = stack.pop()
        children = node.values() if isinstance(node, dict) else node
        if children and d + 1 > deepest:
            deepest = d + 1
            if deepest > limit:
                return deepest
        if not _CONTAINERS.isdisjoint(set(map(type, children))):  # C speed over numbers
            stack.extend([(v, d + 1) for v in children if isinstance(v, (dict, list))])
    return deepest


_CONTAINERS = frozenset({dict, list})  # what json.loads builds (never subclasses)


def _load(payload: bytes) -> Any:
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ProtocolError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    try:
        obj = json.loads(payload.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ProtocolError("payload is not valid UTF-8") from e
    except (json.JSONDecodeError, RecursionError) as e:
        raise ProtocolError(f"payload is not valid JSON: {e}") from e
    if _depth(obj, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise ProtocolError(f"payload nests deeper than {MAX_JSON_DEPTH}")
    if not isinstance(obj, dict):
        raise ProtocolError("payload is not a JSON object")
    schema = obj.get("schema")
    if schema != SCHEMA_VERSION:
        raise ProtocolError(f"unknown payload schema {schema!r} (expected {SCHEMA_VERSION})")
    return obj


def decode(model: type[M], payload: bytes) -> M:
    """Parse ``payload`` as ``model`` or raise :class:`ProtocolError`."""
    obj = _load(payload)
    try:
        return model.model_validate(obj)
    except ValidationError as e:
        raise ProtocolError(f"invalid {model.__name__}: {e.error_count()} error(s)") from e


def decode_event(payload: bytes) -> PhaseEvent | RejectedEvent:
    obj = _load(payload)
    try:
        return _EVENT_ADAPTER.validate_python(obj)
    except ValidationError as e:
        raise ProtocolError(f"invalid event: {e.error_count()} error(s)") from e
