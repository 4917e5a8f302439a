"""Retention: raw windows past the age become hourly sums that give the drift aggregates
(dashboard, alerts, gates sum the same histograms) the same answer at hour resolution."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from edgefleet.controller.db import make_engine
from edgefleet.controller.drift_report import aggregate
from edgefleet.controller.ingest import Ingest
from edgefleet.controller.models.telemetry import TelemetryHourRow, TelemetryWindowRow
from edgefleet.controller.retention import Retention, RetentionConfig, compact, fold
from edgefleet.controller.services import NoLink
from edgefleet.controller.stats import IngestStats
from edgefleet.shared.protocol import TelemetryWindow
from edgefleet.shared.topics import Channel, device_topic
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=timezone.utc)
EDGES = [0.0, 0.25, 0.5, 0.75, 1.0]


class NoRegistrar:
    def register(self, device_ids: list[str]) -> None:
        pass


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    e = make_engine(f"sqlite:///{tmp_path / 'edgefleet.db'}")
    yield e
    e.dispose()


def _window(device_id: str, version: str, minute: int) -> TelemetryWindow:
    end = T0 + timedelta(minutes=minute)
    k = minute % 5
    return TelemetryWindow(
        device_id=device_id, model="shapes", version=version,
        window_start=end - timedelta(minutes=1), window_end=end, frames=600 + k, drops=k,
        latency_edges_ms=[0, 10, 20], latency_counts=[500 + k, 100],
        confidence_edges=EDGES, confidence_counts=[k, 2 * k, 10, 20 + k],
        per_class_confidence={"circle": [k, 0, 1, 2]}, detections=30 + k, low_confidence=k,
    )  # fmt: skip


def _feed(engine: Engine) -> None:
    """Three hours of minutes from two devices on two versions, through the real ingest."""
    ingest = Ingest(engine, None, NoLink(), IngestStats(), registrar=NoRegistrar())  # type: ignore[arg-type]
    batch = [
        (str(device_topic(d, Channel.TELEMETRY)), _window(d, v, m).to_bytes())
        for d, v in (("cam-1", "v1"), ("cam-2", "v2"))
        for m in range(1, 181)
    ]
    ingest.handle_batch(batch)


def _drift(engine: Engine, group_by: str) -> list[tuple[object, ...]]:
    with Session(engine) as s:
        rows = [*s.exec(select(TelemetryWindowRow)).all(), *s.exec(select(TelemetryHourRow)).all()]
    buckets = aggregate(rows, {}, group_by, 3600)  # type: ignore[arg-type]
    return [(b.group, b.version, b.start, b.frames, b.detections, b.low_confidence, b.counts)
            for b in buckets]  # fmt: skip


def _count(engine: Engine, table: type) -> int:
    with Session(engine) as s:
        return len(s.exec(select(table)).all())


def test_compaction_keeps_the_hourly_drift_aggregates(engine: Engine) -> None:
    _feed(engine)
    before = {g: _drift(engine, g) for g in ("model_version", "device")}
    assert _count(engine, TelemetryWindowRow) == 360

    # Half-way through the second hour, then the rest of it: one hour row, added to.
    assert compact(engine, T0 + timedelta(minutes=90)) == 2 * 89
    assert compact(engine, T0 + timedelta(minutes=120)) == 2 * 30
    assert compact(engine, T0 + timedelta(minutes=120)) == 0

    assert _count(engine, TelemetryWindowRow) == 2 * 61  # the third hour (and minute 180)
    assert _count(engine, TelemetryHourRow) == 2 * 2  # two hours of two devices
    for group_by, expected in before.items():
        assert _drift(engine, group_by) == expected, group_by
    with Session(engine) as s:
        hours = s.exec(select(TelemetryHourRow)).all()
        assert sorted(h.windows for h in hours) == [59, 59, 60, 60]
        assert all(sum(h.per_class_confidence["circle"]) > 0 for h in hours)


def test_fold_separates_versions_and_histogram_edges() -> None:
    a = _window("cam-1", "v1", 5)
    other_edges = a.model_copy(update={"confidence_edges": [0.0, 0.5, 1.0]})
    sums = fold([a, a, a.model_copy(update={"version": "v2"}), other_edges])  # type: ignore[list-item]
    assert sorted(s.windows for s in sums.values()) == [1, 1, 2]


def test_retention_runs_with_the_configured_age(engine: Engine) -> None:
    _feed(engine)
    now = T0 + timedelta(hours=3, minutes=30)
    retention = Retention(engine, RetentionConfig(max_age=timedelta(hours=2)), lambda: now)
    assert retention.run_once() == 2 * 89  # windows that ended before 11:30
