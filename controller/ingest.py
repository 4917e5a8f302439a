"""MQTT ingest: device state, status, events and telemetry into the database.

Runs on paho's thread, one message at a time. Malformed payloads are counted and
dropped; any other failure is logged and counted for that message only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

from edgefleet.controller.db import session_scope
from edgefleet.controller.models import Device, EventRow, TelemetryWindowRow
from edgefleet.controller.rollouts.service import HintSender
from edgefleet.controller.stats import IngestStats
from edgefleet.controller.trust import Signing
from edgefleet.shared.errors import ProtocolError
from edgefleet.shared.protocol import (
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
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

log = logging.getLogger(__name__)

_FAILED = (Phase.REVERTED, Phase.FAILED)
_T = TypeVar("_T", DeviceState, Status, TelemetryWindow, PhaseEvent, RejectedEvent)


class Ingest:
    def __init__(
        self,
        engine: Engine,
        signing: Signing,
        hints: HintSender,
        stats: IngestStats,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.engine = engine
        self.signing = signing
        self.hints = hints
        self.stats = stats
        self.clock = clock

    def handle(self, topic: str, payload: bytes) -> None:
        """Entry point for one MQTT message; never raises."""
        try:
            where = parse_device_topic(topic)
        except ProtocolError as e:
            self.stats.count("malformed", "topic")
            log.debug("dropped message on %s: %s", topic, e)
            return
        channel = where.channel.value
        self.stats.count("received", channel)
        try:
            try:
                self._dispatch(where, payload)
            except IntegrityError:
                # Another controller process inserted this device's row first (its first
                # messages went to both through the shared subscription): the row is there now.
                self._dispatch(where, payload)
        except ProtocolError as e:
            self.stats.count("malformed", channel)
            log.debug("dropped %s from %s: %s", channel, where.device_id, e)
        except Exception:  # one bad message must not stop the ingest
            self.stats.count("failed", channel)
            log.exception("ingest of %s from %s failed", channel, where.device_id)

    def _dispatch(self, where: DeviceTopic, payload: bytes) -> None:
        handlers = {
            Channel.STATE: self._on_state,
            Channel.STATUS: self._on_status,
            Channel.EVENTS: self._on_event,
            Channel.TELEMETRY: self._on_telemetry,
        }
        handler = handlers.get(where.channel)
        if handler is None:
            raise ProtocolError(f"the controller does not ingest {where.channel.value}")
        handler(where.device_id, payload)

    # --- per channel ---------------------------------------------------------------------

    def _on_state(self, device_id: str, payload: bytes) -> None:
        state = _same_device(device_id, decode(DeviceState, payload))
        with session_scope(self.engine) as s:
            device = self._device(s, device_id)
            device.model, device.version = state.model, state.version
            device.phase = state.phase.value
            device.error = state.error
            device.labels = dict(state.labels)
            device.fingerprint = state.fingerprint.model_dump() if state.fingerprint else None
            device.agent_version = state.agent_version
            device.last_seen = self.clock()
            s.add(device)

    def _on_status(self, device_id: str, payload: bytes) -> None:
        status = _same_device(device_id, decode(Status, payload))
        with session_scope(self.engine) as s:
            device = self._device(s, device_id)
            device.online = status.online
            device.last_seen = self.clock()
            s.add(device)

    def _on_event(self, device_id: str, payload: bytes) -> None:
        event = _same_device(device_id, decode_event(payload))
        with session_scope(self.engine) as s:
            device = self._device(s, device_id)
            device.last_seen = self.clock()
            if isinstance(event, PhaseEvent):
                row = EventRow(
                    device_id=device_id,
                    kind=event.event,
                    phase=event.phase.value,
                    model=event.model,
                    version=event.version,
                    reason=event.reason,
                    at=event.at,
                )
                if event.phase in _FAILED and event.model and event.version:
                    device.failed_model, device.failed_version = event.model, event.version
            else:
                reason = f"{event.what}: {event.reason}"
                row = EventRow(device_id=device_id, kind=event.event, reason=reason, at=event.at)
            s.add(device)
            s.add(row)

    def _on_telemetry(self, device_id: str, payload: bytes) -> None:
        window = _same_device(device_id, decode(TelemetryWindow, payload))
        data = window.model_dump(exclude={"schema_version"})
        with session_scope(self.engine) as s:
            device = self._device(s, device_id)
            device.last_seen = self.clock()
            s.add(device)
            s.add(TelemetryWindowRow.model_validate(data))

    # --- helpers -------------------------------------------------------------------------

    def _device(self, s: Session, device_id: str) -> Device:
        """The device's row; a device seen for the first time gets its director chain."""
        device = s.get(Device, device_id)
        if device is not None:
            return device
        director_version = self.signing.ensure_device(device_id)
        device = Device(device_id=device_id, director_version=director_version)
        s.add(device)
        s.flush()
        # Retained, so the agent finds it whenever it (re)subscribes.
        self.hints.send_hint(device_id, director_version)
        log.info("new device %s (director version %d)", device_id, director_version)
        return device


def _same_device(device_id: str, msg: _T) -> _T:
    # The broker binds the topic to the device's identity; the payload must agree.
    if msg.device_id != device_id:  # type: ignore[attr-defined]
        raise ProtocolError(f"payload names {msg.device_id!r} on {device_id!r}'s topic")  # type: ignore[attr-defined]
    return msg
