"""The ingest's backpressure (controller/ingest_pressure.py): the decision on a fake clock, the
backlog it reads, the hold messages it sends."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

from edgefleet.controller.ingest_pressure import PressureConfig, PressureGate, PressureWatch
from edgefleet.controller.ingest_queue import Delivery, IngestQueue, QueueConfig
from edgefleet.controller.stats import IngestStats
from edgefleet.shared.protocol import IngestPressure

CONFIG = PressureConfig(high=0.8, low=0.3, dwell_s=5.0, hold_s=60.0)
BOUND = 1000


def test_a_full_backlog_holds_only_after_the_dwell() -> None:
    gate = PressureGate(BOUND, CONFIG)
    assert not gate.observe(0.0, 800)
    assert not gate.observe(4.9, 1000)
    assert gate.observe(5.0, 900) and gate.holding


def test_a_dip_restarts_the_dwell() -> None:
    gate = PressureGate(BOUND, CONFIG)
    gate.observe(0.0, 900)
    gate.observe(3.0, 500)  # one sample below high
    assert not gate.observe(7.0, 900)
    assert not gate.holding
    assert gate.observe(12.0, 900)


def test_release_needs_the_backlog_below_low_water_for_the_dwell() -> None:
    gate = PressureGate(BOUND, CONFIG)
    gate.observe(0.0, 1000)
    gate.observe(5.0, 1000)
    assert gate.holding
    # between the marks: still behind (hysteresis)
    for t in range(6, 30):
        assert not gate.observe(float(t), 500)
    assert gate.holding
    assert not gate.observe(30.0, 299)
    assert not gate.observe(34.9, 0)
    assert gate.observe(35.0, 0) and not gate.holding


def test_broker_drops_hold_at_once_unless_the_ingest_is_idle() -> None:
    gate = PressureGate(BOUND, CONFIG)
    gate.observe(0.0, 0, dropped=10)
    assert not gate.observe(1.0, 0, dropped=25)  # someone else's queue: holding won't help
    assert not gate.observe(2.0, 400, dropped=25)  # no new drops
    assert gate.observe(3.0, 400, dropped=26)
    assert gate.holding


def test_a_hold_is_published_once_renewed_at_half_its_length_and_released_once() -> None:
    gate = PressureGate(BOUND, CONFIG)
    assert gate.due(0.0) is False  # at start: clear a hold a previous run may have left
    gate.sent(False, 0.0)
    assert gate.due(1.0) is None
    gate.observe(0.0, 1000)
    gate.observe(5.0, 1000)
    assert gate.due(5.0) is True
    gate.sent(True, 5.0)
    assert gate.due(34.9) is None
    assert gate.due(35.0) is True  # renewed while still behind
    gate.sent(True, 35.0)
    gate.observe(40.0, 0)
    gate.observe(45.0, 0)
    assert gate.due(45.0) is False
    assert gate.due(46.0) is False  # not sent yet (broker away): asked again
    gate.sent(False, 46.0)
    assert gate.due(47.0) is None


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_the_watch_publishes_holds_with_a_bound_and_retries_a_failed_send() -> None:
    clock = FakeClock()
    wall = datetime(2026, 1, 1, tzinfo=timezone.utc)
    backlog = [0]
    sent: list[IngestPressure] = []
    up = [True]

    def send(p: IngestPressure) -> bool:
        if up[0]:
            sent.append(p)
        return up[0]

    stats = IngestStats()
    watch = PressureWatch(lambda: backlog[0], BOUND, send, stats, CONFIG,
                          clock=clock, wall=lambda: wall)  # fmt: skip
    watch.tick()
    assert [p.hold for p in sent] == [False]
    backlog[0] = 950
    for t in (1.0, 6.0):
        clock.t = t
        watch.tick()
    assert stats.gauges()["hold"] == 1
    assert [p.hold for p in sent] == [False, True]
    assert sent[-1].seconds == 60.0 and sent[-1].until == wall + timedelta(seconds=60)
    backlog[0] = 0
    up[0] = False
    for t in (7.0, 12.0):
        clock.t = t
        watch.tick()
    assert stats.gauges()["hold"] == 0 and len(sent) == 2  # the release did not get out
    up[0] = True
    clock.t = 13.0
    watch.tick()
    assert [p.hold for p in sent] == [False, True, False]


class StalledIngest:
    """A database that takes a batch and does not commit until told to."""

    def __init__(self) -> None:
        self.taken, self.commit = threading.Event(), threading.Event()

    def handle_batch(self, _items: object) -> None:
        self.taken.set()
        assert self.commit.wait(30)


def test_the_backlog_counts_what_a_writer_holds_until_it_is_acked() -> None:
    ingest = StalledIngest()
    q = IngestQueue(ingest, IngestStats(), QueueConfig(capacity=10, batch_max=4))  # type: ignore[arg-type]
    acked = []
    for i in range(6):
        q.put(Delivery(f"edgefleet/v1/devices/cam-{i}/telemetry", b"{}", lambda: acked.append(1)))
    q.start()
    try:
        assert ingest.taken.wait(30)
        assert (q.depth, q.outstanding) == (2, 6)  # 4 being written, 2 queued
        ingest.commit.set()
    finally:
        q.stop()
    assert len(acked) == 6 and q.outstanding == 0
