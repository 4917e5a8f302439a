"""Batched ingest and retention on PostgreSQL (``EDGEFLEET_TEST_PG_URL``), in a fresh
database; skipped, with the reason, when the server is unreachable."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from edgefleet.controller.db import make_engine
from edgefleet.controller.ingest import Ingest
from edgefleet.controller.ingest_queue import Delivery, IngestQueue, QueueConfig
from edgefleet.controller.models.devices import Device
from edgefleet.controller.models.telemetry import TelemetryHourRow, TelemetryWindowRow
from edgefleet.controller.retention import compact
from edgefleet.controller.services import NoLink
from edgefleet.controller.stats import IngestStats
from edgefleet.shared.protocol import DeviceState, Phase, utcnow
from edgefleet.shared.topics import Channel, device_topic
from sqlmodel import Session, select

from tests.controller.test_ingest_burst import NoRegistrar, window
from tests.controller.test_postgres import pg_url  # noqa: F401  (the fixture)

pytestmark = pytest.mark.postgres


def test_batches_on_postgres_with_two_writers(pg_url: str) -> None:  # noqa: F811
    engine = make_engine(pg_url)
    try:
        stats = IngestStats()
        ingest = Ingest(engine, None, NoLink(), stats, registrar=NoRegistrar())  # type: ignore[arg-type]
        q = IngestQueue(ingest, stats, QueueConfig(capacity=200, batch_max=50, writers=2))
        acked = threading.Semaphore(0)
        q.start()
        try:
            for i in range(300):
                d = f"cam-{i % 7}"
                topic = str(device_topic(d, Channel.TELEMETRY))
                q.put(Delivery(topic, window(d, i).to_bytes(), acked.release))
            for v in ("v1", "v2", "v3"):  # one device's states, in order, last one wins
                state = DeviceState(device_id="cam-1", version=v, phase=Phase.IDLE)
                topic = str(device_topic("cam-1", Channel.STATE))
                q.put(Delivery(topic, state.to_bytes(), acked.release))
            for _ in range(303):
                assert acked.acquire(timeout=120)
        finally:
            q.stop()
        with Session(engine) as s:
            assert len(s.exec(select(TelemetryWindowRow)).all()) == 300
            cam1 = s.get(Device, "cam-1")
            assert cam1 is not None and cam1.version == "v3" and cam1.last_seen is not None
        assert stats.get("failed") == 0

        assert compact(engine, utcnow() + timedelta(hours=1)) == 300
        with Session(engine) as s:
            hours = s.exec(select(TelemetryHourRow)).all()
            assert sum(h.windows for h in hours) == 300
            assert not s.exec(select(TelemetryWindowRow)).all()
    finally:
        engine.dispose()
