"""Backpressure: the controller's retained hold keeps agents' telemetry in their spools.

The hold's bounds are unit-tested on a fake clock; the rest runs on a real Mosquitto (the
``broker`` fixture): a real agent link, disk spool and sender, the controller's real link
and pressure watch, and a plain subscriber that counts what reaches the broker.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from edgefleet.agent.forward import IngestHold, TelemetryForwarder
from edgefleet.agent.metrics import AgentMetrics
from edgefleet.agent.mqtt_link import Hint, MqttLink
from edgefleet.agent.spool import DiskSpool
from edgefleet.controller.ingest_pressure import PressureConfig, PressureWatch
from edgefleet.controller.mqtt_link import MqttLink as ControllerLink
from edgefleet.controller.settings import BrokerAddress
from edgefleet.controller.stats import IngestStats
from edgefleet.shared.protocol import IngestPressure, TelemetryWindow, decode
from edgefleet.shared.topics import Channel, fleet_filter
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from prometheus_client import CollectorRegistry

from edgefleet.devbroker import DevBroker
from tests.agent.test_mqtt_link import wait_for

DEVICE = "cam-1"
WAIT_S = 30.0  # seconds, generous for a loaded 2-core machine
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_a_hold_ends_at_its_seconds_its_until_the_broker_expiry_or_a_release() -> None:
    clock, wall = Clock(), [T0]
    hold = IngestHold(clock, lambda: wall[0])
    assert not hold.active()
    hold.apply(IngestPressure(hold=True, until=T0 + timedelta(seconds=60), seconds=60))
    assert hold.active()
    clock.t += 59.9
    assert hold.active()
    clock.t += 0.1
    assert not hold.active()  # seconds after receipt, whatever ``until`` says

    clock.t = 100.0
    hold.apply(IngestPressure(hold=True, until=T0 + timedelta(seconds=60), seconds=60))
    wall[0] = T0 + timedelta(seconds=60)
    assert not hold.active()  # past ``until``: a stale retained hold
    wall[0] = T0

    hold.apply(IngestPressure(hold=True, seconds=60), expiry_s=5)
    clock.t += 5
    assert not hold.active()  # the broker said it had 5 s left

    hold.apply(IngestPressure(hold=True, seconds=60))
    assert hold.active()
    hold.apply(IngestPressure(hold=False))
    assert not hold.active()


def window(i: int) -> TelemetryWindow:
    end = datetime.now(timezone.utc) + timedelta(seconds=i)
    return TelemetryWindow(
        device_id=DEVICE, window_start=end - timedelta(minutes=1), window_end=end,
        frames=600, latency_edges_ms=[0, 10, 20], latency_counts=[500, 100],
        confidence_edges=[0, 0.5, 1], confidence_counts=[30, i],
    )  # fmt: skip


class Counter:
    """A plain subscriber: the windows that reached the broker, by their ``confidence_counts``."""

    def __init__(self, port: int) -> None:
        self.seen: list[int] = []
        self._lock = threading.Lock()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="counter",
                        protocol=MQTTProtocolVersion.MQTTv5)  # fmt: skip
        subscribed = threading.Event()
        c.on_subscribe = lambda *_a: subscribed.set()
        c.on_message = self._on_message
        c.connect("127.0.0.1", port)
        c.loop_start()
        c.subscribe(fleet_filter(Channel.TELEMETRY), qos=1)
        assert subscribed.wait(WAIT_S)
        self.client = c

    def _on_message(self, _c: Any, _u: Any, m: mqtt.MQTTMessage) -> None:
        w = decode(TelemetryWindow, bytes(m.payload))
        with self._lock:
            self.seen.append(w.confidence_counts[1])

    def count(self) -> int:
        with self._lock:
            return len(self.seen)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass
class Agent:
    link: MqttLink
    hold: IngestHold
    forwarder: TelemetryForwarder
    spool: DiskSpool

    def rounds_held(self, more: int) -> Callable[[], bool]:
        """True once the sender looked at the spool ``more`` more times and held back."""
        start = self.forwarder.held_rounds
        return lambda: self.forwarder.held_rounds >= start + more


@pytest.fixture
def agent(broker: DevBroker, tmp_path: Path) -> Iterator[Agent]:
    hints: queue.Queue[Hint] = queue.Queue(maxsize=8)
    link = MqttLink(DEVICE, "127.0.0.1", broker.port, hints, reconnect_delay=(1, 1))
    hold = IngestHold()
    link.on_pressure = hold.apply  # as agent/dataloop.py wires it
    spool = DiskSpool(tmp_path / "spool", max_entries=100)

    def publish(payload: bytes, timeout: float) -> bool:
        return link.publish_confirmed(Channel.TELEMETRY, payload, timeout)

    forwarder = TelemetryForwarder(spool, publish, link.connected.is_set, hold=hold,
                                   interval_s=0.05)  # fmt: skip
    stop = threading.Event()
    sender = threading.Thread(target=forwarder.run, args=(stop,), daemon=True)
    link.start()
    assert link.wait_subscribed(WAIT_S)
    sender.start()
    try:
        yield Agent(link, hold, forwarder, spool)
    finally:
        stop.set()
        sender.join(5)
        link.stop()


@pytest.fixture
def controller(broker: DevBroker) -> Iterator[ControllerLink]:
    link = ControllerLink(BrokerAddress("127.0.0.1", broker.port), "edgefleet-controller")
    link.start()
    assert link.wait_connected(WAIT_S)
    try:
        yield link
    finally:
        link.stop()


@pytest.fixture
def counter(broker: DevBroker) -> Iterator[Counter]:
    c = Counter(broker.port)
    try:
        yield c
    finally:
        c.close()


@pytest.mark.broker
def test_under_a_hold_windows_stay_spooled_and_all_arrive_after_release(
    agent: Agent, controller: ControllerLink, counter: Counter
) -> None:
    backlog = [0]
    stats = IngestStats()
    config = PressureConfig(dwell_s=0.2, tick_s=0.05, hold_s=60.0)
    watch = PressureWatch(lambda: backlog[0], 100, controller.send_pressure, stats, config)
    watch.start()
    try:
        backlog[0] = 100  # the controller's ingest is saturated
        wait_for("the agent to hold", agent.hold.active, WAIT_S)
        assert stats.gauges()["hold"] == 1
        for i in range(20):
            agent.forwarder.submit(window(i))
        wait_for("the sender to look at the spool while held", agent.rounds_held(5), WAIT_S)
        assert counter.count() == 0
        assert len(agent.spool) == 20 and agent.forwarder.held == 20
        registry = CollectorRegistry()
        AgentMetrics(registry, "cpu").track_telemetry(agent.forwarder)
        sample = registry.get_sample_value
        assert sample("edgefleet_agent_telemetry_held_windows_total") == 20
        assert sample("edgefleet_agent_telemetry_hold") == 1

        backlog[0] = 0  # caught up
        wait_for("all 20 windows", lambda: counter.count() == 20, WAIT_S)
        assert not agent.hold.active() and stats.gauges()["hold"] == 0
        assert sorted(counter.seen) == list(range(20)) and len(agent.spool) == 0
    finally:
        watch.stop()


@pytest.mark.broker
def test_an_expired_hold_does_not_stop_sending(
    agent: Agent, controller: ControllerLink, counter: Counter
) -> None:
    until = datetime.now(timezone.utc) + timedelta(seconds=60)
    assert controller.send_pressure(IngestPressure(hold=True, until=until, seconds=5))
    wait_for("the agent to hold", agent.hold.active, WAIT_S)
    for i in range(5):
        agent.forwarder.submit(window(i))
    assert counter.count() == 0
    wait_for("the hold to run out and the windows to arrive",
             lambda: counter.count() == 5, WAIT_S)  # fmt: skip
    assert agent.forwarder.held == 5


@pytest.mark.broker
def test_a_stale_retained_hold_is_ignored_by_an_agent_that_connects_later(
    broker: DevBroker, controller: ControllerLink, counter: Counter, tmp_path: Path
) -> None:
    past = datetime.now(timezone.utc) - timedelta(seconds=1)  # a dead controller's hold
    assert controller.send_pressure(IngestPressure(hold=True, until=past, seconds=600))
    got: list[IngestPressure] = []
    hints: queue.Queue[Hint] = queue.Queue(maxsize=8)
    link = MqttLink("cam-2", "127.0.0.1", broker.port, hints, reconnect_delay=(1, 1))
    hold = IngestHold()

    def on_pressure(p: IngestPressure, expiry: float | None) -> None:
        hold.apply(p, expiry)
        got.append(p)

    link.on_pressure = on_pressure
    link.start()
    try:
        wait_for("the retained hold", lambda: got, WAIT_S)
        assert got[0].hold and not hold.active()
    finally:
        link.stop()
