"""MQTT ingest against a real Mosquitto: devices publish, the controller upserts.

The controller side is the real wiring of ``serve.build_services`` (paho link + ingest +
SQLite + TUF repositories); the devices are plain paho clients speaking the protocol.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from edgefleet.controller.models.devices import Device
from edgefleet.controller.models.telemetry import EventRow, TelemetryWindowRow
from edgefleet.controller.mqtt_link import MqttLink
from edgefleet.controller.serve import build_services
from edgefleet.controller.services import Services
from edgefleet.controller.settings import Settings
from edgefleet.shared.protocol import (
    DesiredHint,
    DeviceState,
    Fingerprint,
    Phase,
    PhaseEvent,
    Status,
    TelemetryWindow,
    decode,
)
from edgefleet.shared.topics import Channel, device_topic
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from sqlmodel import Session, select

from edgefleet.devbroker import DevBroker, free_port
from tests import waiting

pytestmark = pytest.mark.broker

WAIT = 10.0  # seconds


def wait_for(check: Callable[[], object], what: str, timeout: float = WAIT) -> object:
    return waiting.wait_for(what, check, timeout)


class FakeDevice:
    """A real MQTT client publishing as one device (no agent logic)."""

    def __init__(self, broker: DevBroker, device_id: str) -> None:
        self.device_id = device_id
        self.received: list[tuple[str, bytes, bool]] = []
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=device_id, protocol=MQTTProtocolVersion.MQTTv5
        )
        self.client.on_message = lambda _c, _u, m: self.received.append(
            (m.topic, m.payload, bool(m.retain))
        )
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()

    def publish(self, channel: Channel, payload: bytes, retain: bool = False) -> None:
        info = self.client.publish(
            device_topic(self.device_id, channel), payload, qos=1, retain=retain
        )
        info.wait_for_publish(timeout=WAIT)

    def subscribe(self, channel: Channel) -> None:
        self.client.subscribe(device_topic(self.device_id, channel), qos=1)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def controller(tmp_path: Path, broker: DevBroker) -> Iterator[tuple[Services, MqttLink]]:
    settings = Settings(data_dir=tmp_path / "ctl", mqtt_url=broker.url)
    services, link = build_services(settings)
    link.start()
    assert link.wait_connected(WAIT), "controller did not connect to the broker"
    time.sleep(0.2)  # let the SUBACKs land before devices publish
    try:
        yield services, link
    finally:
        link.stop()
        services.engine.dispose()


@pytest.fixture
def devices(broker: DevBroker) -> Iterator[Callable[[str], FakeDevice]]:
    made: list[FakeDevice] = []

    def make(device_id: str) -> FakeDevice:
        made.append(FakeDevice(broker, device_id))
        return made[-1]

    yield make
    for d in made:
        d.close()


def _device(services: Services, device_id: str) -> Device | None:
    with Session(services.engine) as s:
        return s.get(Device, device_id)


def _window(device_id: str) -> TelemetryWindow:
    now = datetime.now(timezone.utc)
    return TelemetryWindow(
        device_id=device_id, model="shapes", version="v1",
        window_start=now - timedelta(seconds=60), window_end=now,
        frames=600, drops=2, latency_edges_ms=[0, 10, 20], latency_counts=[500, 100],
        confidence_edges=[0, 0.5, 1], confidence_counts=[30, 570],
        per_class_confidence={"circle": [10, 200]}, detections=600, low_confidence=30,
    )  # fmt: skip


def test_state_status_telemetry_and_events_are_ingested(
    controller: tuple[Services, MqttLink], devices: Callable[[str], FakeDevice]
) -> None:
    services, _ = controller
    cam = devices("cam-1")
    state = DeviceState(
        device_id="cam-1", model="shapes", version="v1", phase=Phase.COMMITTED,
        labels={"site": "a"}, fingerprint=Fingerprint(arch="x86_64"), agent_version="0.1.0",
    )  # fmt: skip
    cam.publish(Channel.STATE, state.to_bytes(), retain=True)
    cam.publish(Channel.STATUS, Status(device_id="cam-1", online=True).to_bytes(), retain=True)
    cam.publish(Channel.TELEMETRY, _window("cam-1").to_bytes())
    event = PhaseEvent(device_id="cam-1", phase=Phase.REVERTED, model="shapes", version="v2",
                       reason="health check: latency over budget")  # fmt: skip
    cam.publish(Channel.EVENTS, event.to_bytes())

    def ingested() -> bool:
        d = _device(services, "cam-1")
        return bool(d and d.online and d.phase == "COMMITTED" and d.failed_version == "v2")

    wait_for(ingested, "device row")
    d = _device(services, "cam-1")
    assert d is not None
    assert (d.model, d.version, d.labels) == ("shapes", "v1", {"site": "a"})
    assert d.fingerprint is not None and d.fingerprint["arch"] == "x86_64"
    with Session(services.engine) as s:
        windows = wait_for(lambda: s.exec(select(TelemetryWindowRow)).all(), "telemetry window")
        assert windows[0].frames == 600  # type: ignore[index]
        assert windows[0].per_class_confidence == {"circle": [10, 200]}  # type: ignore[index]
        events = s.exec(select(EventRow)).all()
        assert [(e.kind, e.phase, e.version) for e in events] == [("phase", "REVERTED", "v2")]

    cam.publish(Channel.STATUS, Status(device_id="cam-1", online=False).to_bytes(), retain=True)
    wait_for(lambda: not _device(services, "cam-1").online, "offline")  # type: ignore[union-attr]


def test_malformed_payloads_are_counted_dropped_and_survived(
    controller: tuple[Services, MqttLink], devices: Callable[[str], FakeDevice]
) -> None:
    services, link = controller
    cam = devices("cam-2")
    cam.publish(Channel.STATE, b"not json at all")
    cam.publish(Channel.STATE, b'{"schema": 99, "device_id": "cam-2"}')
    cam.publish(Channel.TELEMETRY, b'{"schema": 1, "device_id": "cam-2"}')  # missing fields
    cam.publish(Channel.EVENTS, b'{"schema": 1, "event": "bogus", "device_id": "cam-2"}')
    cam.publish(Channel.STATUS, b"\xff\xfe")
    # Another device's id in cam-2's topic: refused, the topic is the identity.
    cam.publish(Channel.STATE, DeviceState(device_id="cam-9").to_bytes())
    wait_for(lambda: services.stats.get("malformed") >= 6, "6 malformed counted")
    assert services.stats.get("malformed", "state") == 3
    assert services.stats.get("failed") == 0
    assert _device(services, "cam-9") is None

    # Still alive and ingesting.
    cam.publish(Channel.STATE, DeviceState(device_id="cam-2", phase=Phase.IDLE).to_bytes())
    wait_for(lambda: _device(services, "cam-2") is not None, "good state after bad ones")
    assert link.connected


def test_new_device_gets_a_retained_desired_hint(
    controller: tuple[Services, MqttLink], devices: Callable[[str], FakeDevice]
) -> None:
    services, _ = controller
    cam = devices("cam-3")
    cam.publish(Channel.STATUS, Status(device_id="cam-3", online=True).to_bytes(), retain=True)
    # The chain is signed off the write path: the row comes first, its version after.
    wait_for(lambda: getattr(_device(services, "cam-3"), "director_version", None), "signed")
    d = _device(services, "cam-3")
    assert d is not None and d.director_version is not None
    signing = services.signing
    assert '"_type": "root"' in signing.newest_root(signing.director_repo("cam-3"))

    # A client subscribing afterwards still gets it: the hint is retained.
    later = devices("cam-3-reader")
    later.client.subscribe(device_topic("cam-3", Channel.DESIRED), qos=1)
    topic = device_topic("cam-3", Channel.DESIRED)
    msgs = wait_for(lambda: [m for m in later.received if m[0] == topic], "retained hint")
    _, payload, retained = msgs[0]  # type: ignore[index]
    assert retained
    assert decode(DesiredHint, payload).director_version == d.director_version


def test_retained_state_reaches_a_controller_started_later(
    tmp_path: Path, broker: DevBroker, devices: Callable[[str], FakeDevice]
) -> None:
    cam = devices("cam-4")
    state = DeviceState(device_id="cam-4", model="shapes", version="v1", phase=Phase.COMMITTED)
    cam.publish(Channel.STATE, state.to_bytes(), retain=True)
    services, link = build_services(Settings(data_dir=tmp_path / "ctl", mqtt_url=broker.url))
    link.start()
    try:
        wait_for(lambda: _device(services, "cam-4") is not None, "retained state ingested")
    finally:
        link.stop()
        services.engine.dispose()


def test_unreachable_broker_is_not_fatal_and_reconnects(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    settings = Settings(data_dir=tmp_path / "ctl", mqtt_url=f"mqtt://127.0.0.1:{port}")
    services, link = build_services(settings)
    link.start()
    try:
        wait_for(lambda: "cannot reach the MQTT broker" in caplog.text, "one clear warning")
        assert not link.connected
        link.send_hint("cam-5", 1)  # kept until the broker is back
        broker = DevBroker(tmp_path / "late-broker", port=port).start()
        try:
            assert link.wait_connected(40), "did not reconnect once the broker came up"
            reader = FakeDevice(broker, "cam-5-reader")
            reader.client.subscribe(device_topic("cam-5", Channel.DESIRED), qos=1)
            wait_for(lambda: reader.received, "pending hint flushed on connect")
            reader.close()
        finally:
            broker.stop()
    finally:
        link.stop()
        services.engine.dispose()
    warnings = [r for r in caplog.records if "cannot reach the MQTT broker" in r.getMessage()]
    assert len(warnings) == 1


def test_deep_invalid_utf8_and_oversize_dropped_on_every_channel(
    controller: tuple[Services, MqttLink], devices: Callable[[str], FakeDevice], broker: DevBroker
) -> None:
    from edgefleet.shared.protocol import MAX_PAYLOAD_BYTES

    from tests.agent.test_mqtt_link import BROKER_MAX_PACKET, publish_past_broker_limit

    services, link = controller
    cam = devices("cam-3")
    deep = b'{"schema": 1, "device_id": "cam-3", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    bad_utf8 = b'{"schema": 1, "device_id": "cam-3\xff"}'
    oversize = b'{"schema": 1, "device_id": "cam-3", "pad": "' + b"a" * MAX_PAYLOAD_BYTES + b'"}'
    assert MAX_PAYLOAD_BYTES < len(oversize) < BROKER_MAX_PACKET
    channels = (Channel.STATE, Channel.EVENTS, Channel.TELEMETRY, Channel.STATUS)
    for channel in channels:
        for payload in (deep, bad_utf8, oversize):
            cam.publish(channel, payload)
    wait_for(lambda: services.stats.get("malformed") >= 12, "12 malformed counted")
    for channel in channels:
        assert services.stats.get("malformed", channel.value) == 3, channel
    assert services.stats.get("failed") == 0

    # past the broker's max_packet_size: refused by the broker, never reaches the controller
    assert publish_past_broker_limit(broker.port, str(device_topic("cam-3", Channel.STATE)))
    cam.publish(Channel.STATE, DeviceState(device_id="cam-3", phase=Phase.IDLE).to_bytes())
    wait_for(lambda: _device(services, "cam-3") is not None, "good state after bad ones")
    assert services.stats.get("malformed") == 12 and link.connected
