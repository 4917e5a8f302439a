"""What one scheduler tick reads of the fleet's telemetry, on SQLite and PostgreSQL.

A tick used to load every telemetry window of every matching device as ORM rows (and
filter them by time in Python), then hash the canaries once per window. Telemetry grows
with the fleet and the minutes, so a 5,000-device rollout on PostgreSQL went from 20 s to
93 s per tick (bench/README.md section 10). Now a rollout without gates reads no window
(the database sums the fallbacks), and one with gates reads only windows since it began.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from edgefleet.controller.models.base import as_utc
from edgefleet.controller.models.telemetry import TelemetryWindowRow
from edgefleet.controller.registry import push_version
from edgefleet.controller.rollouts.scheduler import Scheduler
from edgefleet.controller.services import Services
from edgefleet.shared.histogram import CONFIDENCE_EDGES, LATENCY_EDGES_MS, bin_counts
from edgefleet.shared.protocol import TelemetryWindow
from edgefleet.shared.topics import Channel, device_topic
from sqlalchemy import event
from sqlmodel import Session

from tests.controller.test_postgres import pg_url  # noqa: F401 - the PostgreSQL fixture
from tests.controller.test_scheduler import GATES, Clock, Fleet, _create, _deps, _drive

HISTORY_ROUNDS = 5  # telemetry windows per device before the rollout


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def fleet(
    request: pytest.FixtureRequest,
    make_services: Callable[..., Services],
    onnx_model: Path,
    tmp_path: Path,
    make_onnx: Callable[[Path, int], Path],
) -> tuple[Services, Clock, Fleet]:
    url = None if request.param == "sqlite" else request.getfixturevalue("pg_url")
    services = make_services(database_url=url)
    clock = Clock()
    services.clock = clock
    devices = Fleet(services, clock)
    with Session(services.engine) as s:
        for version, path in (("v1", onnx_model), ("v2", make_onnx(tmp_path / "b.onnx", 40))):
            with path.open("rb") as f:
                push_version(s, services.store, services.signing, "shapes", f, version=version)
    for i in range(10):
        devices.add(f"cam-{i}", "v1", site=f"s{i % 2}")
    for _ in range(HISTORY_ROUNDS):
        devices.telemetry({})
    return services, clock, devices


@pytest.fixture
def loaded() -> Iterator[list[datetime]]:
    """window_start of every telemetry window the ORM loads while the test runs."""
    starts: list[datetime] = []

    def on_load(target: TelemetryWindowRow, _context: Any) -> None:
        starts.append(as_utc(target.window_start) or target.window_start)

    event.listen(TelemetryWindowRow, "load", on_load)
    yield starts
    event.remove(TelemetryWindowRow, "load", on_load)


def _fallback_window(fleet: Fleet, device_id: str) -> None:
    start = fleet.clock.now
    w = TelemetryWindow(
        device_id=device_id, model="shapes", version="v1", window_start=start,
        window_end=fleet.clock.now, frames=30, latency_edges_ms=list(LATENCY_EDGES_MS),
        latency_counts=bin_counts([8.0] * 30, LATENCY_EDGES_MS),
        confidence_edges=list(CONFIDENCE_EDGES),
        confidence_counts=bin_counts([0.8] * 40, CONFIDENCE_EDGES), detections=40, fallbacks=1,
    )  # fmt: skip
    fleet.ingest.handle(device_topic(device_id, Channel.TELEMETRY), w.to_bytes())


def test_a_rollout_without_gates_reads_no_window_and_still_sees_a_fallback(
    fleet: tuple[Services, Clock, Fleet], serve: Callable, loaded: list[datetime]
) -> None:  # type: ignore[type-arg]
    services, clock, devices = fleet
    sched = Scheduler(services.engine, _deps(services), clock=clock, holder="a")
    with serve(services) as client:
        r = _create(client, stages="1,100%", soak_s=600)
        _drive(sched, devices, {}, 3)
        body = client.get(f"/v1/rollouts/{r['id']}").json()
        assert body["state"] == "running" and body["done"] == 1, body["reason"]
        assert loaded == []
        canary = body["devices"][0]["device_id"]
        devices.report(canary, "v1")  # fell back to the previous model
        _fallback_window(devices, canary)
        sched.round()
        body = client.get(f"/v1/rollouts/{r['id']}").json()
        assert body["state"] == "failed", body
        assert body["reason"].startswith("stage 1 (1) failed: errors"), body["reason"]


def test_a_gated_rollout_reads_only_windows_since_it_began(
    fleet: tuple[Services, Clock, Fleet], serve: Callable, loaded: list[datetime]
) -> None:  # type: ignore[type-arg]
    services, clock, devices = fleet
    sched = Scheduler(services.engine, _deps(services), clock=clock, holder="a")
    began = clock.now
    with serve(services) as client:
        r = _create(client, stages="1,100%", soak_s=15, gates=GATES)
        for _ in range(20):
            _drive(sched, devices, {"v1": 0.8, "v2": 0.8}, 1)
            body = client.get(f"/v1/rollouts/{r['id']}").json()
            if body["state"] != "running":
                break
        assert body["state"] == "succeeded", (body["reason"], body["stages"])
    assert loaded, "the gates judged no window"
    assert min(loaded) >= began, f"read windows from {min(loaded)}, the rollout began {began}"
