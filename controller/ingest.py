"""MQTT ingest: device state, status, events and telemetry into the database.

:meth:`Ingest.handle_batch` writes many messages in one transaction: the batch's devices
are read with one query, ``last_seen`` is set once per device, telemetry windows go in
with one bulk insert, and state, status and events are applied in arrival order, so a
device's newest state wins. :meth:`Ingest.handle` is a batch of one. The queue and the
writer threads in front of it live in ``ingest_queue.py``.

Malformed payloads are counted and dropped. When a batch fails for any other reason it is
retried one message per transaction, so one bad message costs only itself.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

from edgefleet.controller.db import (
    TRANSIENT_ATTEMPTS,
    first_line,
    is_transient,
    session_scope,
)
from edgefleet.controller.models.devices import Device
from edgefleet.controller.models.telemetry import EventRow, TelemetryWindowRow
from edgefleet.controller.rollouts.context import HintSender
from edgefleet.controller.stats import IngestStats
from edgefleet.controller.trust import Signing
from edgefleet.shared.errors import ProtocolError
from edgefleet.shared.protocol import (
    MAX_JSON_DEPTH,
    MAX_PAYLOAD_BYTES,
    SCHEMA_VERSION,
    DeviceState,
    Phase,
    PhaseEvent,
    RejectedEvent,
    Status,
    TelemetryWindow,
    decode,
    decode_event,
    utcnow,
)
from edgefleet.shared.topics import Channel, DeviceTopic, parse_device_topic
from pydantic import ValidationError
from sqlalchemy import update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

log = logging.getLogger(__name__)

_FAILED = (Phase.REVERTED, Phase.FAILED)


class _FromDevice(Protocol):
    @property
    def device_id(self) -> str: ...


_T = TypeVar("_T", bound=_FromDevice)
_IN_CHUNK = 500  # ids per IN (...) list: well under SQLite's bound-parameter limit
_WINDOW_COLUMNS = frozenset(TelemetryWindowRow.__table__.columns.keys()) - {"id"}  # type: ignore[attr-defined]

Payload = DeviceState | Status | TelemetryWindow | PhaseEvent | RejectedEvent


class Registrar(Protocol):
    """Gives new devices their director chain and hint (``ingest_queue.Registrar``)."""

    def register(self, device_ids: Sequence[str]) -> None: ...


@dataclass(frozen=True)
class Decoded:
    device_id: str
    channel: Channel
    msg: Payload


class Ingest:
    def __init__(
        self,
        engine: Engine,
        signing: Signing,
        hints: HintSender,
        stats: IngestStats,
        clock: Callable[[], datetime] = utcnow,
        *,
        registrar: Registrar | None = None,
    ) -> None:
        self.engine = engine
        self.signing = signing
        self.hints = hints
        self.stats = stats
        self.clock = clock
        # None: a new device's chain is signed inline (tests, scripts); the server passes
        # a background registrar so signing never holds up the batch.
        self.registrar = registrar
        # Devices seen with a director chain. Rows are never deleted and a chain is never
        # taken away, so once here an id needs no lookup: a burst from a known fleet
        # costs no query per batch. Bounded by the fleet's size.
        self._chained: set[str] = set()

    def handle(self, topic: str, payload: bytes) -> None:
        """One MQTT message, in its own transaction; never raises."""
        self.handle_batch([(topic, payload)])

    def handle_batch(self, messages: Sequence[tuple[str, bytes]]) -> None:
        """Store ``messages`` (topic, payload) in one transaction; never raises."""
        decoded = [d for d in (self._decode(t, p) for t, p in messages) if d is not None]
        for channel, n in Counter(d.channel.value for d in decoded).items():
            self.stats.count("received", channel, n)
        if not decoded:
            return
        try:
            self._store(decoded)
        except Exception:  # noqa: BLE001  one bad message must not cost its batch: retry one by one
            if len(decoded) == 1:
                self._failed(decoded[0])
                return
            log.warning("a batch of %d failed; storing its messages one by one", len(decoded))
            for d in decoded:
                try:
                    self._store([d])
                except Exception:  # noqa: BLE001  (_failed logs it with its traceback)
                    self._failed(d)

    # --- decoding (no I/O) ---------------------------------------------------------------

    def _decode(self, topic: str, payload: bytes) -> Decoded | None:
        try:
            where = parse_device_topic(topic)
        except ProtocolError as e:
            self.stats.count("malformed", "topic")
            log.debug("dropped message on %s: %s", topic, e)
            return None
        channel = where.channel.value
        try:
            return Decoded(where.device_id, where.channel, _parse(where, payload))
        except ProtocolError as e:
            self.stats.count("received", channel)
            self.stats.count("malformed", channel)
            log.debug("dropped %s from %s: %s", channel, where.device_id, e)
            return None

    # --- storing -------------------------------------------------------------------------

    def _store(self, batch: Sequence[Decoded]) -> None:
        unsigned = self._write_retrying(batch)
        for channel, n in Counter(d.channel.value for d in batch).items():
            self.stats.count("stored", channel, n)
        if unsigned and self.registrar is not None:
            self.registrar.register(unsigned)

    def _write_retrying(self, batch: Sequence[Decoded]) -> list[str]:
        """:meth:`_write`, again when PostgreSQL chose it as a deadlock's victim (another
        replica or thread wrote the same devices in another order): expected beside other
        replicas, so one line and no traceback."""
        for attempt in range(1, TRANSIENT_ATTEMPTS + 1):
            try:
                return self._write(batch)
            except Exception as e:
                if attempt == TRANSIENT_ATTEMPTS or not is_transient(e):
                    raise
                log.info("ingest batch of %d retried (%s)", len(batch), first_line(e))
        raise AssertionError("unreachable")

    def _write(self, batch: Sequence[Decoded]) -> list[str]:
        """One transaction for the batch; the ids of its devices without a director chain."""
        ids = sorted({d.device_id for d in batch})
        with session_scope(self.engine) as s:
            known = self._known(s, [i for i in ids if i not in self._chained])
            known.update((i, False) for i in ids if i in self._chained)
            new = _insert_missing(s, [i for i in ids if i not in known])
            _lock_devices(s, ids)
            # Full rows only for devices whose state, status or events change them.
            changed = {d.device_id for d in batch if d.channel is not Channel.TELEMETRY}
            devices = self._rows(s, sorted(changed.union(new)))
            windows: list[dict[str, Any]] = []
            for d in batch:
                if isinstance(d.msg, TelemetryWindow):
                    windows.append(_window_row(d.msg))
                else:
                    _apply(devices[d.device_id], d.msg, s)
            if self.registrar is None:
                self._register_inline(devices, new)
            s.flush()
            self._seen(s, ids)
            if windows:
                s.connection().execute(TelemetryWindowRow.__table__.insert(), windows)  # type: ignore[attr-defined]
            unsigned = [
                i for i in ids
                if (devices[i].director_version is None if i in devices else known.get(i, True))
            ]  # fmt: skip
        self._chained.update(set(ids).difference(unsigned))  # committed: safe to remember
        if new:
            log.info("%d new device(s): %s", len(new), ", ".join(new[:5]))
        return unsigned

    def _known(self, s: Session, ids: list[str]) -> dict[str, bool]:
        """Known device id -> whether it still lacks a director chain."""
        known: dict[str, bool] = {}
        for i in range(0, len(ids), _IN_CHUNK):
            stmt = select(Device.device_id, Device.director_version).where(
                col(Device.device_id).in_(ids[i : i + _IN_CHUNK])
            )
            known.update((d, v is None) for d, v in s.exec(stmt))
        return known

    def _rows(self, s: Session, ids: list[str]) -> dict[str, Device]:
        found: dict[str, Device] = {}
        for i in range(0, len(ids), _IN_CHUNK):
            stmt = select(Device).where(col(Device.device_id).in_(ids[i : i + _IN_CHUNK]))
            found.update((d.device_id, d) for d in s.exec(stmt))
        return found

    def _seen(self, s: Session, ids: list[str]) -> None:
        """``last_seen`` once per device per batch, in one statement per chunk."""
        now = self.clock()
        table = Device.__table__  # type: ignore[attr-defined]
        for i in range(0, len(ids), _IN_CHUNK):
            chunk = ids[i : i + _IN_CHUNK]
            s.connection().execute(
                update(table).where(table.c.device_id.in_(chunk)).values(last_seen=now)
            )

    def _register_inline(self, devices: dict[str, Device], new: list[str]) -> None:
        for device_id in new:
            version = self.signing.ensure_device(device_id)
            devices[device_id].director_version = version
            # Retained, so the agent finds it whenever it (re)subscribes.
            self.hints.send_hint(device_id, version)
            log.info("new device %s (director version %d)", device_id, version)

    def _failed(self, d: Decoded) -> None:
        self.stats.count("failed", d.channel.value)
        log.exception("ingest of %s from %s failed", d.channel.value, d.device_id)


def _insert_missing(s: Session, ids: list[str]) -> list[str]:
    """Insert the devices not in the table yet; the ids this transaction inserted. Another
    replica receives the same first messages (state and status are not shared
    subscriptions), so an id it inserted meanwhile is skipped, not a conflict."""
    if not ids:
        return []
    rows = [Device(device_id=i).model_dump() for i in ids]
    insert = pg_insert if s.get_bind().dialect.name == "postgresql" else sqlite_insert
    stmt = insert(Device).values(rows).on_conflict_do_nothing().returning(col(Device.device_id))
    return sorted(s.exec(stmt).scalars())


def _lock_devices(s: Session, ids: list[str]) -> None:
    """Lock the batch's device rows in id order before writing any (PostgreSQL; SQLite
    has one write lock): replicas write the same devices (every one receives every state
    and status), and rows locked in arrival order deadlock. ``FOR NO KEY UPDATE`` leaves
    the key share that a telemetry row's foreign key takes free."""
    if s.get_bind().dialect.name != "postgresql":
        return
    for i in range(0, len(ids), _IN_CHUNK):
        stmt = (
            select(Device.device_id)
            .where(col(Device.device_id).in_(ids[i : i + _IN_CHUNK]))
            .order_by(col(Device.device_id))
            .with_for_update(key_share=True)
        )
        s.exec(stmt).all()


def _parse(where: DeviceTopic, payload: bytes) -> Payload:
    if where.channel is Channel.STATE:
        return _same_device(where.device_id, decode(DeviceState, payload))
    if where.channel is Channel.STATUS:
        return _same_device(where.device_id, decode(Status, payload))
    if where.channel is Channel.EVENTS:
        return _same_device(where.device_id, decode_event(payload))
    if where.channel is Channel.TELEMETRY:
        return _same_device(where.device_id, _telemetry(payload))
    raise ProtocolError(f"the controller does not ingest {where.channel.value}")


def _window_row(window: TelemetryWindow) -> dict[str, Any]:
    # The model's field values as they are, not model_dump: the row only reads them, and
    # dumping cost a fifth of a window's ingest.
    fields = window.__dict__
    return {k: fields[k] for k in _WINDOW_COLUMNS}


def _telemetry(payload: bytes) -> TelemetryWindow:
    """``decode(TelemetryWindow, payload)``, parsed and validated in one pass when safe.

    The bulk of what the controller ingests. ``decode`` parses with ``json`` and walks
    the result to bound its depth before validating; here a payload with few enough
    brackets that it cannot nest past the bound (each level needs one) goes straight to
    pydantic's JSON validator. Anything it refuses, and anything larger, takes the
    ``decode`` path, so the accepted payloads and the error messages are the same.
    """
    openers = payload.count(b"{") + payload.count(b"[")
    if openers + 1 <= MAX_JSON_DEPTH and len(payload) <= MAX_PAYLOAD_BYTES:
        try:
            window = TelemetryWindow.model_validate_json(payload)
        except ValidationError:
            window = None
        # ``decode`` refuses a payload without ``schema``; the model would default it.
        schema_given = window is not None and "schema_version" in window.model_fields_set
        if window is not None and schema_given and window.schema_version == SCHEMA_VERSION:
            return window
    return decode(TelemetryWindow, payload)


def _apply(
    device: Device, msg: DeviceState | Status | PhaseEvent | RejectedEvent, s: Session
) -> None:
    """Apply ``msg`` to the device's row; an event also becomes a row of its own."""
    if isinstance(msg, DeviceState):
        device.model, device.version = msg.model, msg.version
        device.phase = msg.phase.value
        device.error = msg.error
        device.labels = dict(msg.labels)
        device.fingerprint = msg.fingerprint.model_dump() if msg.fingerprint else None
        device.agent_version = msg.agent_version
    elif isinstance(msg, Status):
        device.online = msg.online
    else:
        s.add(_event_row(device, msg))


def _event_row(device: Device, event: PhaseEvent | RejectedEvent) -> EventRow:
    if isinstance(event, PhaseEvent):
        # A transient fault (controller or broker away, a download cut off) is retried by
        # the agent: the install is still in progress, and no gate may count it.
        failed = event.phase in _FAILED and not event.transient
        if failed and event.model and event.version:
            device.failed_model, device.failed_version = event.model, event.version
        return EventRow(
            device_id=device.device_id, kind=event.event, phase=event.phase.value,
            model=event.model, version=event.version, reason=event.reason, at=event.at,
        )  # fmt: skip
    reason = f"{event.what}: {event.reason}"
    return EventRow(device_id=device.device_id, kind=event.event, reason=reason, at=event.at)


def _same_device(device_id: str, msg: _T) -> _T:
    # The broker binds the topic to the device's identity; the payload must agree.
    if msg.device_id != device_id:
        raise ProtocolError(f"payload names {msg.device_id!r} on {device_id!r}'s topic")
    return msg
