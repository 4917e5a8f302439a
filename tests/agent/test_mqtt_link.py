"""The agent's MQTT link against a real Mosquitto (the ``broker`` fixture)."""

from __future__ import annotations

import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from edgefleet.agent.mqtt_link import Hint, MqttLink
from edgefleet.shared.protocol import (
    MAX_PAYLOAD_BYTES,
    Command,
    DesiredHint,
    DeviceState,
    Phase,
    RejectedEvent,
    Status,
    decode,
    decode_event,
)
from edgefleet.shared.topics import Channel, device_topic
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from edgefleet.devbroker import DevBroker, free_port
from tests import waiting

pytestmark = pytest.mark.broker

DEVICE = "cam-1"
WAIT_S = 10.0


def wait_for(what: str, check: Callable[[], Any], timeout: float = WAIT_S) -> Any:
    return waiting.wait_for(what, check, timeout)


class Watcher:
    """A controller-side client that records what arrives on the device's topics."""

    def __init__(self, port: int) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id="watcher", protocol=MQTTProtocolVersion.MQTTv5
        )
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.client.subscribe(f"edgefleet/v1/devices/{DEVICE}/#", qos=1)
        assert subscribed.wait(WAIT_S)

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def on(self, channel: Channel) -> list[bytes]:
        topic = device_topic(DEVICE, channel)
        with self._lock:
            return [p for t, p, _ in self.messages if t == topic]

    def statuses(self) -> list[bool]:
        return [decode(Status, p).online for p in self.on(Channel.STATUS)]

    def send(self, channel: Channel, payload: bytes, retain: bool = False) -> None:
        self.client.publish(device_topic(DEVICE, channel), payload, qos=1, retain=retain)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def watcher(broker: DevBroker) -> Iterator[Watcher]:
    w = Watcher(broker.port)
    yield w
    w.close()


@pytest.fixture
def link(broker: DevBroker) -> Iterator[tuple[MqttLink, queue.Queue[Hint]]]:
    hints: queue.Queue[Hint] = queue.Queue(maxsize=16)
    lk = MqttLink(DEVICE, "127.0.0.1", broker.port, hints, keepalive=5, reconnect_delay=(1, 2))
    lk.start()
    # Subscribed, not only connected: a message sent before the SUBACK may not reach it.
    assert lk.wait_subscribed(WAIT_S)
    yield lk, hints
    lk.stop()


def next_hint(hints: queue.Queue[Hint], source: str) -> Hint:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        h = hints.get(timeout=WAIT_S)
        if h.source == source:
            return h
    raise AssertionError(f"no {source} hint")


def test_online_status_and_state_are_retained(
    broker: DevBroker, link: tuple[MqttLink, queue.Queue[Hint]]
) -> None:
    lk, _ = link
    lk.publish_state(
        DeviceState(device_id=DEVICE, model="shapes", version="v1", phase=Phase.COMMITTED)
    )
    time.sleep(0.3)

    late = Watcher(broker.port)  # subscribes after the fact: only retained messages reach it
    try:
        wait_for("retained status", late.statuses)
        assert late.statuses() == [True]
        state = decode(DeviceState, wait_for("retained state", lambda: late.on(Channel.STATE))[0])
        assert (state.version, state.phase) == ("v1", Phase.COMMITTED)
    finally:
        late.close()


def test_last_will_when_the_connection_dies(
    watcher: Watcher, link: tuple[MqttLink, queue.Queue[Hint]]
) -> None:
    lk, _ = link
    wait_for("online", lambda: watcher.statuses() == [True])
    sock = lk._client.socket()
    assert isinstance(sock, socket.socket)
    sock.shutdown(socket.SHUT_RDWR)  # the connection dies without a DISCONNECT

    wait_for("last will", lambda: False in watcher.statuses())
    # ... and paho reconnects by itself and says online again.
    wait_for(
        "back online", lambda: watcher.statuses()[-1:] == [True] and len(watcher.statuses()) >= 3
    )


def test_clean_stop_publishes_offline(broker: DevBroker, watcher: Watcher) -> None:
    hints: queue.Queue[Hint] = queue.Queue(maxsize=4)
    lk = MqttLink(DEVICE, "127.0.0.1", broker.port, hints)
    lk.start()
    assert lk.wait_connected(WAIT_S)
    lk.stop()
    wait_for("offline", lambda: watcher.statuses()[-1:] == [False])


def test_desired_and_command_arrive_as_hints(
    watcher: Watcher, link: tuple[MqttLink, queue.Queue[Hint]]
) -> None:
    _, hints = link
    watcher.send(Channel.DESIRED, DesiredHint(director_version=7).to_bytes(), retain=True)
    assert next_hint(hints, "desired").director_version == 7
    watcher.send(Channel.COMMANDS, Command(command="refresh").to_bytes())
    assert next_hint(hints, "command").source == "command"


def test_drift_alert_command_opens_the_samplers_drift_budget(
    watcher: Watcher, link: tuple[MqttLink, queue.Queue[Hint]], tmp_path: Path
) -> None:
    """What controller/alerts/push.py sends: the sampler treats the scene as changed."""
    from edgefleet.agent.sampler import Sampler
    from edgefleet.agent.spool import DiskSpool
    from edgefleet.shared.sampling import SamplingConfig

    lk, hints = link
    sampler = Sampler(DEVICE, SamplingConfig(), DiskSpool(tmp_path / "spool"), None)
    lk.on_drift = sampler.drift_alert
    assert not sampler.drift.drifting(time.monotonic())
    watcher.send(Channel.COMMANDS, Command(command="drift", hold_s=60).to_bytes())
    wait_for("the sampler drifting", lambda: sampler.drift.drifting(time.monotonic()))
    assert sampler.drift.until - time.monotonic() <= 60
    got = []
    while not hints.empty():
        got.append(hints.get_nowait().source)
    assert "command" not in got and lk.malformed == 0  # not a refresh, not malformed
    watcher.send(Channel.COMMANDS, Command(command="refresh").to_bytes())
    assert next_hint(hints, "command").source == "command"


def test_malformed_payloads_are_counted_dropped_and_reported(
    watcher: Watcher, link: tuple[MqttLink, queue.Queue[Hint]]
) -> None:
    lk, hints = link
    watcher.send(Channel.COMMANDS, b"\xff not json")
    watcher.send(Channel.DESIRED, b'{"schema": 1, "director_version": "seven"}')
    watcher.send(Channel.COMMANDS, b'{"schema": 99, "command": "refresh"}')

    wait_for("three malformed", lambda: lk.malformed == 3)
    # The report travels agent -> broker -> watcher: wait for it, it is not there at once.
    wait_for("the rejection reported", lambda: watcher.on(Channel.EVENTS))
    rejected = [decode_event(p) for p in watcher.on(Channel.EVENTS)]
    assert isinstance(rejected[0], RejectedEvent)
    # Still alive: a good hint after the bad ones gets through.
    watcher.send(Channel.COMMANDS, Command(command="refresh").to_bytes())
    assert next_hint(hints, "command").source == "command"


def test_desired_hint_sent_while_offline_arrives_after_reconnect(broker: DevBroker) -> None:
    """Persistent session: QoS 1 messages queued by the broker while the agent was away."""
    hints: queue.Queue[Hint] = queue.Queue(maxsize=16)
    lk = MqttLink(DEVICE, "127.0.0.1", broker.port, hints)
    lk.start()
    assert lk.wait_subscribed(WAIT_S)  # the session holds the subscription from here on
    lk.stop()
    w = Watcher(broker.port)
    try:
        w.send(Channel.COMMANDS, Command(command="refresh").to_bytes())
        time.sleep(0.3)
    finally:
        w.close()
    hints2: queue.Queue[Hint] = queue.Queue(maxsize=16)
    lk2 = MqttLink(DEVICE, "127.0.0.1", broker.port, hints2)
    lk2.start()
    try:
        assert next_hint(hints2, "command").source == "command"
    finally:
        lk2.stop()


def test_unreachable_broker_does_not_raise_and_connects_later(tmp_path: Any) -> None:
    port = free_port()
    hints: queue.Queue[Hint] = queue.Queue(maxsize=16)
    lk = MqttLink(DEVICE, "127.0.0.1", port, hints, reconnect_delay=(1, 1))
    lk.start()  # nothing listens yet: no exception, paho keeps trying
    try:
        assert not lk.wait_connected(1.0)
        # Queued while offline (an agent that restarted and resumed an install at once):
        # they arrive in order, the newest last, so the broker keeps the truth.
        for phase in (Phase.COMMITTED, Phase.DOWNLOADING, Phase.VERIFIED):
            lk.publish_state(DeviceState(device_id=DEVICE, phase=phase))
        broker = DevBroker(tmp_path / "late", port=port).start()
        watcher = Watcher(broker.port)
        try:
            assert lk.wait_connected(WAIT_S)
            wait_for("three states", lambda: len(watcher.on(Channel.STATE)) >= 3)
            phases = [decode(DeviceState, p).phase for p in watcher.on(Channel.STATE)]
            assert phases == [Phase.COMMITTED, Phase.DOWNLOADING, Phase.VERIFIED]
        finally:
            watcher.close()
            lk.stop()
            broker.stop()
    finally:
        lk.stop()


BROKER_MAX_PACKET = 1048576  # edgefleet/mosquitto-dev.conf and deploy/mosquitto: max_packet_size


def publish_past_broker_limit(port: int, topic: str) -> bool:
    """An MQTT 3.1.1 client (no size negotiated) sends more than max_packet_size; True when
    the broker cuts that client off instead of delivering it."""
    gone = threading.Event()
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="flooder",
                    protocol=MQTTProtocolVersion.MQTTv311)  # fmt: skip
    c.on_disconnect = lambda *_a: gone.set()
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        c.publish(topic, b"x" * (BROKER_MAX_PACKET + 1024), qos=1)
        return gone.wait(WAIT_S)
    finally:
        c.disconnect()
        c.loop_stop()


def test_deep_invalid_utf8_and_oversize_payloads_dropped_agent_keeps_serving(
    broker: DevBroker, watcher: Watcher, link: tuple[MqttLink, queue.Queue[Hint]]
) -> None:
    lk, hints = link
    deep = b'{"schema": 1, "command": "refresh", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    watcher.send(Channel.COMMANDS, deep)
    watcher.send(Channel.DESIRED, b'{"schema": 1, "director_version": 7, "n": "\xff\xfe"}')
    oversize = b'{"schema": 1, "command": "refresh", "pad": "' + b"a" * MAX_PAYLOAD_BYTES + b'"}'
    assert len(oversize) < BROKER_MAX_PACKET
    watcher.send(Channel.DESIRED, oversize)
    watcher.send(Channel.COMMANDS, oversize)
    wait_for("four malformed", lambda: lk.malformed == 4)

    # past the broker's max_packet_size: the broker refuses it, the agent never sees it
    assert publish_past_broker_limit(broker.port, str(device_topic(DEVICE, Channel.DESIRED)))
    watcher.send(Channel.COMMANDS, Command(command="refresh").to_bytes())
    assert next_hint(hints, "command").source == "command"
    assert lk.malformed == 4 and lk.wait_connected(WAIT_S)


def test_settings_and_card_announcements_call_their_hooks(
    broker: DevBroker, watcher: Watcher
) -> None:
    """What controller/announce.py sends: flags for the sampler and the card cache, no
    director refresh; and the settings hook fires on every connect."""
    hints: queue.Queue[Hint] = queue.Queue(maxsize=16)
    lk = MqttLink(DEVICE, "127.0.0.1", broker.port, hints)
    settings, cards = [], []
    lk.on_settings = lambda: settings.append(True)
    lk.on_card = lambda model, version: cards.append((model, version))
    lk.start()
    try:
        assert lk.wait_subscribed(WAIT_S)
        assert settings == [True]  # connecting counts as an announcement
        watcher.send(Channel.COMMANDS, Command(command="settings").to_bytes())
        wait_for("the settings hook", lambda: len(settings) == 2)
        card = Command(command="card", model="shapes", version="v2")
        watcher.send(Channel.COMMANDS, card.to_bytes())
        wait_for("the card hook", lambda: cards == [("shapes", "v2")])
        watcher.send(Channel.COMMANDS, Command(command="refresh").to_bytes())
        assert next_hint(hints, "reconnect").source == "reconnect"
        assert next_hint(hints, "command").source == "command"  # the refresh, nothing before
        assert hints.empty() and lk.malformed == 0
    finally:
        lk.stop()


def test_an_unknown_command_is_counted_and_dropped_without_a_traceback(
    watcher: Watcher, link: tuple[MqttLink, queue.Queue[Hint]], caplog: pytest.LogCaptureFixture
) -> None:
    """What an agent that predates a command does with it (as this one with a newer one)."""
    lk, hints = link
    watcher.send(Channel.COMMANDS, b'{"schema": 1, "command": "reboot-the-world"}')
    watcher.send(Channel.COMMANDS, b'{"schema": 1, "command": "card"}')  # names no version
    wait_for("two malformed", lambda: lk.malformed == 2)
    assert not [r for r in caplog.records if r.exc_info]
    wait_for(  # the agent publishes its refusal after it counted the message
        "a rejected event",
        lambda: any(isinstance(decode_event(p), RejectedEvent) for p in watcher.on(Channel.EVENTS)),
    )
    watcher.send(Channel.COMMANDS, Command(command="refresh").to_bytes())
    assert next_hint(hints, "command").source == "command"
