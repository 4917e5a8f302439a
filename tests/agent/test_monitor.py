"""The telemetry window: pure counting, the clock comes from the caller."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from edgefleet.agent.monitor import WindowAccumulator
from edgefleet.shared.histogram import CONFIDENCE_EDGES, LATENCY_EDGES_MS, bin_counts

from edgefleet.runtime.backend import Detection

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def det(name: str, conf: float) -> Detection:
    return Detection(class_id=0, class_name=name, confidence=conf, box_xyxy=(0, 0, 1, 1))


def test_window_counts_frames_drops_latency_and_confidence() -> None:
    acc = WindowAccumulator("cam-1", T0, low_confidence=0.5)
    acc.record_frame(4.0, [det("circle", 0.9), det("square", 0.3)], model="shapes", version="v1")
    acc.record_frame(12.0, [det("circle", 0.45)], model="shapes", version="v1")
    acc.record_frame(2000.0, [], model="shapes", version="v1")
    acc.record_drop(2)

    w = acc.roll(T0 + timedelta(seconds=60))

    assert (w.device_id, w.model, w.version) == ("cam-1", "shapes", "v1")
    assert (w.window_start, w.window_end) == (T0, T0 + timedelta(seconds=60))
    assert (w.frames, w.drops, w.detections, w.low_confidence) == (3, 2, 3, 2)
    assert w.empty_frames == 1  # the third frame found nothing (drift alerts' empty share)
    assert w.detections_per_frame == 1.0
    assert w.latency_edges_ms == list(LATENCY_EDGES_MS)
    assert sum(w.latency_counts) == 3
    assert w.latency_counts == [a + b + c for a, b, c in zip(
        *(bin_counts([ms], LATENCY_EDGES_MS) for ms in (4.0, 12.0, 2000.0)), strict=True
    )]  # fmt: skip
    assert LATENCY_EDGES_MS[w.latency_counts.index(1)] <= 4.0  # 4 ms in its log bin
    assert w.confidence_edges == list(CONFIDENCE_EDGES)
    assert sum(w.confidence_counts) == 3
    assert sorted(w.per_class_confidence) == ["circle", "square"]
    assert sum(w.per_class_confidence["circle"]) == 2
    assert w.per_class_confidence["square"][6] == 1  # 0.3 in [0.30, 0.35)


def test_roll_starts_an_empty_window_where_the_last_ended() -> None:
    acc = WindowAccumulator("cam-1", T0)
    acc.record_frame(1.0, [det("a", 0.9)])
    t1 = T0 + timedelta(seconds=60)
    acc.roll(t1)

    w = acc.roll(t1 + timedelta(seconds=60))

    assert w.window_start == t1
    assert (w.frames, w.drops, w.detections) == (0, 0, 0)
    assert sum(w.latency_counts) == 0
    assert w.per_class_confidence == {}
    assert w.model is None


def test_window_serialises_to_the_wire() -> None:
    acc = WindowAccumulator("cam-1", T0)
    acc.record_frame(3.0, [det("a", 0.7)])
    payload = acc.roll(T0 + timedelta(seconds=1)).to_bytes()
    assert b'"frames":1' in payload


def test_window_counts_candidates_above_the_measurement_threshold() -> None:
    """A device with a high cut still measures what the model card measures."""
    acc = WindowAccumulator("cam-1", T0, low_confidence=0.5)
    acc.record_frame(1.0, [det("a", 0.9)], candidates=[det("a", 0.4), det("b", 0.1)])
    acc.record_frame(1.0, [], candidates=[det("b", 0.2)])

    w = acc.roll(T0)

    assert (w.frames, w.detections, w.low_confidence) == (2, 2, 1)
    assert w.confidence_counts == bin_counts([0.9, 0.4], CONFIDENCE_EDGES)
    assert sorted(w.per_class_confidence) == ["a"]


def test_window_reports_fallbacks_and_the_next_starts_from_zero() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    acc = WindowAccumulator("cam-1", t0)
    acc.record_fallback()
    acc.record_frame(10.0, [])
    first = acc.roll(t0 + timedelta(seconds=10))
    second = acc.roll(t0 + timedelta(seconds=20))
    assert (first.fallbacks, second.fallbacks) == (1, 0)
