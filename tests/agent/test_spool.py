"""The disk spool and store-and-forward of telemetry windows across a real broker restart."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from edgefleet.agent.forward import TelemetryForwarder
from edgefleet.agent.mqtt_link import Hint, MqttLink
from edgefleet.agent.spool import DiskSpool
from edgefleet.shared.histogram import CONFIDENCE_EDGES, LATENCY_EDGES_MS
from edgefleet.shared.protocol import TelemetryWindow, decode, utcnow
from edgefleet.shared.topics import Channel, device_topic
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from edgefleet.devbroker import DevBroker
from tests import waiting

DEVICE = "cam-spool"


def wait_for(what: str, check: Callable[[], Any], timeout: float = 30.0) -> Any:
    return waiting.wait_for(what, check, timeout)


def window(n: int) -> TelemetryWindow:
    start = utcnow() + timedelta(seconds=n)
    return TelemetryWindow(
        device_id=DEVICE, window_start=start, window_end=start + timedelta(seconds=1),
        frames=n, latency_edges_ms=list(LATENCY_EDGES_MS),
        latency_counts=[0] * (len(LATENCY_EDGES_MS) - 1),
        confidence_edges=list(CONFIDENCE_EDGES),
        confidence_counts=[0] * (len(CONFIDENCE_EDGES) - 1),
    )  # fmt: skip


def test_spool_survives_reopen_and_cleans_partial_entries(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path, max_entries=10)
    a = spool.put(b'{"a": 1}', {"jpg": b"\xff\xd8\xff-a"})
    spool.put(b'{"b": 2}')
    (tmp_path / "000000000099.jpg").write_bytes(b"orphan: its index was never written")
    (tmp_path / ".000000000100.json.tmp").write_bytes(b"half a temp file")
    again = DiskSpool(tmp_path, max_entries=10)
    assert [e.path().read_bytes() for e in again.entries()] == [b'{"a": 1}', b'{"b": 2}']
    assert again.entries()[0].path("jpg").read_bytes() == b"\xff\xd8\xff-a"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [a.path().name, a.path("jpg").name, again.entries()[1].path().name]
    )
    assert again.put(b"{}").seq == 3  # numbering goes on after the restart


def test_spool_bound_drops_oldest_and_counts(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path, max_entries=3)
    for i in range(5):
        spool.put(f'{{"i": {i}}}'.encode())
    assert [e.path().read_bytes() for e in spool.entries()] == [b'{"i": 2}', b'{"i": 3}',
                                                                 b'{"i": 4}']  # fmt: skip
    assert spool.dropped == 2
    by_bytes = DiskSpool(tmp_path / "b", max_entries=100, max_bytes=250)
    for _ in range(5):
        by_bytes.put(b"x" * 100)
    assert len(by_bytes) == 2 and by_bytes.dropped == 3


@pytest.fixture
def received(broker: DevBroker) -> Iterator[queue.Queue[TelemetryWindow]]:
    """A controller-side subscriber that reconnects and resubscribes by itself."""
    got: queue.Queue[TelemetryWindow] = queue.Queue()
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="spool-watcher",
                    protocol=MQTTProtocolVersion.MQTTv5)  # fmt: skip
    c.reconnect_delay_set(1, 1)
    topic = str(device_topic(DEVICE, Channel.TELEMETRY))
    c.on_connect = lambda cl, *_: cl.subscribe(topic, qos=1)
    c.on_message = lambda _c, _u, m: got.put(decode(TelemetryWindow, m.payload))
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    try:
        yield got
    finally:
        c.disconnect()
        c.loop_stop()


@pytest.mark.broker
@pytest.mark.slow
def test_windows_are_kept_on_disk_while_the_broker_is_down(
    broker: DevBroker, received: queue.Queue[TelemetryWindow], tmp_path: Path
) -> None:
    link = MqttLink(DEVICE, "127.0.0.1", broker.port, queue.Queue[Hint](maxsize=16),
                    reconnect_delay=(1, 1))  # fmt: skip
    spool = DiskSpool(tmp_path / "telemetry", max_entries=100)
    forwarder = TelemetryForwarder(
        spool, lambda p, t: link.publish_confirmed(Channel.TELEMETRY, p, t),
        link.connected.is_set, ack_timeout_s=2.0, interval_s=0.2,
    )  # fmt: skip
    stop = threading.Event()
    sender = threading.Thread(target=forwarder.run, args=(stop,), daemon=True)
    link.start()
    sender.start()
    try:
        assert link.wait_connected(10)
        time.sleep(0.5)  # the watcher's subscription is in place
        for n in (1, 2):
            forwarder.submit(window(n))
        wait_for("windows 1-2", lambda: received.qsize() >= 2)

        broker.stop()
        wait_for("the link to notice", lambda: not link.connected.is_set())
        for n in range(3, 9):
            forwarder.submit(window(n))
        time.sleep(0.5)
        assert len(spool) == 6  # all on disk, none sent, none lost
        # A second spool on the same folder (an agent restart) sees the same backlog.
        assert len(DiskSpool(tmp_path / "telemetry", max_entries=100)) == 6

        broker.start()  # DevBroker.restart() is stop() + start() on the same port
        wait_for("the backlog to drain", lambda: len(spool) == 0)
        got = [received.get(timeout=10) for _ in range(8)]
        assert sorted({w.frames for w in got}) == list(range(1, 9))
        assert [w.frames for w in got][2:] == list(range(3, 9))  # oldest first
        broker.restart()
        assert wait_for("reconnect", link.connected.is_set)
        forwarder.submit(window(9))
        assert received.get(timeout=20).frames == 9
    finally:
        stop.set()
        sender.join(5)
        link.stop()
