from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from edgefleet.shared.errors import ProtocolError
from edgefleet.shared.protocol import (
    MAX_PAYLOAD_BYTES,
    DesiredHint,
    DeviceState,
    Phase,
    PhaseEvent,
    RejectedEvent,
    TelemetryWindow,
    decode,
    decode_event,
)


def test_roundtrip_state() -> None:
    s = DeviceState(device_id="cam-1", model="shapes", version="v1", phase=Phase.COMMITTED)
    back = decode(DeviceState, s.to_bytes())
    assert back == s
    assert json.loads(s.to_bytes())["schema"] == 1


def test_events_are_a_discriminated_union() -> None:
    e = PhaseEvent(device_id="a", phase=Phase.SWAPPED, model="m", version="v2")
    r = RejectedEvent(device_id="a", what="desired", reason="bad json")
    assert isinstance(decode_event(e.to_bytes()), PhaseEvent)
    assert isinstance(decode_event(r.to_bytes()), RejectedEvent)
    with pytest.raises(ProtocolError):
        decode_event(b'{"schema": 1, "event": "nope", "device_id": "a"}')


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"\xff\xfe\xfa",
        b"[1, 2]",
        b'{"schema": 99, "director_version": 1}',
        b'{"director_version": 1}',
        b'{"schema": 1, "director_version": "many"}',
        ("[" * 5000 + "]" * 5000).encode(),
        b'{"schema": 1, "a": ' + b'{"b": ' * 40 + b"1" + b"}" * 40 + b"}",
        b'{"schema": 1, "director_version": 1, "pad": "' + b"x" * MAX_PAYLOAD_BYTES + b'"}',
    ],
    ids=["text", "utf8", "array", "schema", "no-schema", "type", "deep-array", "deep", "big"],
)
def test_malformed_payloads_raise_protocol_error(payload: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode(DesiredHint, payload)


def test_unknown_fields_are_ignored_for_forward_compat() -> None:
    hint = decode(DesiredHint, b'{"schema": 1, "director_version": 3, "url": "http://evil"}')
    assert hint.director_version == 3
    assert not hasattr(hint, "url")


def test_window_detections_per_frame() -> None:
    now = datetime.now(timezone.utc)
    w = TelemetryWindow(
        device_id="a", window_start=now, window_end=now, frames=4, detections=10,
        latency_edges_ms=[0, 1], latency_counts=[4], confidence_edges=[0, 1],
        confidence_counts=[10],
    )  # fmt: skip
    assert w.detections_per_frame == 2.5


def test_a_real_window_survives_the_wire() -> None:
    from edgefleet.shared.histogram import CONFIDENCE_EDGES, LATENCY_EDGES_MS, bin_counts

    now = datetime.now(timezone.utc)
    w = TelemetryWindow(
        device_id="a", window_start=now, window_end=now, frames=2, detections=1,
        latency_edges_ms=list(LATENCY_EDGES_MS),
        latency_counts=bin_counts([3.0, 99999.0], LATENCY_EDGES_MS),
        confidence_edges=list(CONFIDENCE_EDGES),
        confidence_counts=bin_counts([0.7], CONFIDENCE_EDGES),
    )  # fmt: skip
    assert decode(TelemetryWindow, w.to_bytes()) == w


def test_non_finite_numbers_are_refused_when_built() -> None:
    from pydantic import ValidationError

    now = datetime.now(timezone.utc)
    with pytest.raises(ValidationError):
        TelemetryWindow(
            device_id="a", window_start=now, window_end=now, latency_edges_ms=[0, float("inf")],
            latency_counts=[1], confidence_edges=[0, 1], confidence_counts=[0],
        )  # fmt: skip
