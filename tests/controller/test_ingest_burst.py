"""A reconnect burst larger than the old broker queue limit (1,000), through the shipped
queue settings, all stored; batches acked only once stored; order per device kept."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from edgefleet.controller.db import make_engine
from edgefleet.controller.ingest import Ingest
from edgefleet.controller.ingest_queue import Delivery, IngestQueue, QueueConfig, Registrar
from edgefleet.controller.models.devices import Device
from edgefleet.controller.models.telemetry import EventRow, TelemetryWindowRow
from edgefleet.controller.serve import build_services
from edgefleet.controller.services import NoLink
from edgefleet.controller.settings import Settings
from edgefleet.controller.stats import IngestStats
from edgefleet.controller.trust import TufSigning
from edgefleet.shared.protocol import DeviceState, Phase, PhaseEvent, TelemetryWindow
from edgefleet.shared.topics import Channel, device_topic
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from edgefleet.devbroker import DevBroker, queue_settings
from tests.controller.test_ingest import FakeDevice, wait_for

REPO = Path(__file__).resolve().parents[2]
OLD_QUEUE_LIMIT = 1000  # max_queued_messages deploy/mosquitto/mosquitto.conf used to ship
BURST = 2500  # windows: well past the old limit
WAIT = 120.0  # seconds, for a loaded 2-core machine


def window(device_id: str, i: int) -> TelemetryWindow:
    # recent: retention would fold windows older than its age into hours at once
    end = datetime.now(timezone.utc) - timedelta(seconds=i)
    return TelemetryWindow(
        device_id=device_id, model="shapes", version="v1",
        window_start=end - timedelta(minutes=1), window_end=end, frames=600,
        latency_edges_ms=[0, 10, 20], latency_counts=[500, 100],
        confidence_edges=[0, 0.5, 1], confidence_counts=[30, i],
    )  # fmt: skip


def _count(engine: Engine, what: object) -> int:
    with Session(engine) as s:
        return int(s.exec(select(func.count()).select_from(what)).one())  # type: ignore[call-overload]


def test_shipped_broker_config_has_the_tested_queue_settings() -> None:
    shipped = (REPO / "deploy" / "mosquitto" / "mosquitto.conf").read_text().splitlines()
    settings = queue_settings().splitlines()
    assert any(s.startswith("max_queued_messages") for s in settings)
    for line in settings:
        assert line in shipped, f"deploy/mosquitto/mosquitto.conf lacks {line!r}"
    keys = {s.split()[0] for s in settings}
    others = [ln for ln in shipped if ln.split()[:1] and ln.split()[0] in keys]
    assert sorted(others) == sorted(settings), "a queue setting is repeated with another value"


@pytest.mark.broker
def test_reconnect_burst_past_the_old_queue_limit_is_all_stored(
    tmp_path: Path, broker: DevBroker
) -> None:
    settings = Settings(data_dir=tmp_path / "ctl", mqtt_url=broker.url)
    services, link = build_services(settings)
    link.start()
    assert link.wait_connected(WAIT)
    _wait_subscribed(broker, services.engine)
    link.stop()  # the controller is away; its persistent session keeps what comes now
    probes = _count(services.engine, TelemetryWindowRow)
    services.engine.dispose()

    _publish_burst(broker, [(f"cam-{i % 50:03d}", i) for i in range(BURST)])

    services, link = build_services(settings)  # same data dir: same client id and session
    link.start()
    try:
        wait_for(lambda: _burst_rows(services.engine) >= BURST, "burst", WAIT)
        assert _burst_rows(services.engine) == BURST  # every window, none twice
        # A probe sent while the first was on its way may arrive only now (it was never
        # acked), so the stored count is checked against the rows, probes included.
        stored = _count(services.engine, TelemetryWindowRow) - probes
        assert services.stats.get("stored", "telemetry") == stored
        assert services.stats.get("failed") == 0
        assert services.stats.gauges()["queue_capacity"] >= link.receive_maximum
        # the broker's own count ($SYS, retained) reached the controller: nothing dropped
        wait_for(lambda: "broker_dropped" in services.stats.gauges(), "$SYS dropped", WAIT)
        assert services.stats.gauges()["broker_dropped"] == 0
    finally:
        link.stop()
        services.engine.dispose()


def _burst_rows(engine: Engine) -> int:
    with Session(engine) as s:
        stmt = select(func.count()).where(col(TelemetryWindowRow.device_id) != "probe")
        return int(s.exec(stmt).one())


def _wait_subscribed(broker: DevBroker, engine: Engine) -> None:
    """The controller's subscriptions are live once a probe window it was sent is stored."""
    probe = FakeDevice(broker, "probe")
    try:
        for _ in range(int(WAIT / 2)):
            probe.publish(Channel.TELEMETRY, window("probe", 0).to_bytes())
            try:
                wait_for(lambda: _count(engine, TelemetryWindowRow) > 0, "probe", 2.0)
            except AssertionError:  # published before the subscription was live: again
                continue
            return
        raise AssertionError("the controller never stored a probe window")
    finally:
        probe.close()


def _publish_burst(broker: DevBroker, windows: list[tuple[str, int]]) -> None:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="burst",
                    protocol=MQTTProtocolVersion.MQTTv5)  # fmt: skip
    c.max_inflight_messages_set(100)
    c.max_queued_messages_set(0)
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    try:
        infos = [
            c.publish(str(device_topic(d, Channel.TELEMETRY)), window(d, i).to_bytes(), qos=1)
            for d, i in windows
        ]
        for info in infos:
            info.wait_for_publish(timeout=WAIT)
    finally:
        c.disconnect()
        c.loop_stop()


# --- the queue and the batch writer, on a real SQLite database ---------------------------


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    e = make_engine(f"sqlite:///{tmp_path / 'edgefleet.db'}")
    yield e
    e.dispose()


class NoRegistrar:
    def __init__(self) -> None:
        self.asked: list[str] = []

    def register(self, device_ids: list[str]) -> None:
        self.asked.extend(device_ids)


def test_a_delivery_is_acked_only_once_its_window_is_stored(engine: Engine) -> None:
    stats = IngestStats()
    ingest = Ingest(engine, None, NoLink(), stats, registrar=NoRegistrar())  # type: ignore[arg-type]
    q = IngestQueue(ingest, stats, QueueConfig(capacity=100, batch_max=10, writers=2))
    stored_at_ack: list[int] = []
    all_acked = threading.Event()

    def ack() -> None:
        stored_at_ack.append(_count(engine, TelemetryWindowRow))
        if len(stored_at_ack) == 40:
            all_acked.set()

    q.start()
    try:
        for i in range(40):
            d = f"cam-{i % 4}"
            q.put(Delivery(str(device_topic(d, Channel.TELEMETRY)), window(d, i).to_bytes(), ack))
        assert all_acked.wait(WAIT)
    finally:
        q.stop()
    assert _count(engine, TelemetryWindowRow) == 40
    # every ack came after a commit that held its window: the count never lags the acks
    assert all(n >= k + 1 for k, n in enumerate(sorted(stored_at_ack)))
    assert stats.get("stored", "telemetry") == 40


def test_a_batch_keeps_each_devices_order_and_sets_last_seen_once(engine: Engine) -> None:
    registrar = NoRegistrar()
    now = datetime(2026, 5, 1, tzinfo=timezone.utc)
    ingest = Ingest(engine, None, NoLink(), IngestStats(), lambda: now, registrar=registrar)  # type: ignore[arg-type]

    def state(version: str) -> tuple[str, bytes]:
        s = DeviceState(device_id="cam-1", model="shapes", version=version, phase=Phase.IDLE)
        return str(device_topic("cam-1", Channel.STATE)), s.to_bytes()

    def event(phase: Phase) -> tuple[str, bytes]:
        e = PhaseEvent(device_id="cam-1", phase=phase, model="shapes", version="v2")
        return str(device_topic("cam-1", Channel.EVENTS)), e.to_bytes()

    telemetry = [(str(device_topic("cam-2", Channel.TELEMETRY)), window("cam-2", i).to_bytes())
                 for i in range(3)]  # fmt: skip
    ingest.handle_batch(
        [state("v1"), event(Phase.DOWNLOADING), *telemetry, state("v2"), event(Phase.FAILED)]
    )
    with Session(engine) as s:
        cam1, cam2 = s.get(Device, "cam-1"), s.get(Device, "cam-2")
        assert cam1 is not None and cam2 is not None
        assert cam1.version == "v2"  # the newer state, last in the batch, wins
        assert cam1.failed_version == "v2"
        phases = s.exec(select(EventRow.phase).order_by(col(EventRow.id))).all()
        assert list(phases) == ["DOWNLOADING", "FAILED"]
        assert cam2.last_seen is not None and cam2.last_seen.replace(tzinfo=timezone.utc) == now
    assert _count(engine, TelemetryWindowRow) == 3
    assert sorted(registrar.asked) == ["cam-1", "cam-2"]  # new: no director chain yet


def test_registrar_signs_new_devices_and_never_overrides_a_newer_hint(
    engine: Engine, tmp_path: Path
) -> None:
    signing = TufSigning.open(tmp_path / "data")
    hints = NoLink()
    registrar = Registrar(engine, signing, hints)
    ingest = Ingest(engine, signing, hints, IngestStats(), registrar=registrar)
    for d in ("cam-1", "cam-2"):
        ingest.handle(str(device_topic(d, Channel.STATE)), DeviceState(device_id=d).to_bytes())
    with Session(engine) as s:  # a rollout assigned cam-2 meanwhile and hinted version 7
        cam2 = s.get(Device, "cam-2")
        assert cam2 is not None
        cam2.director_version = 7
        s.add(cam2)
        s.commit()
    registrar.start()
    try:
        assert registrar.wait_idle(WAIT)
    finally:
        registrar.stop()
    assert [d for d, _ in hints.sent] == ["cam-1"]
    assert '"_type": "root"' in signing.newest_root(signing.director_repo("cam-1"))
    with Session(engine) as s:
        assert [
            d.director_version for d in s.exec(select(Device).order_by(col(Device.device_id)))
        ] == [hints.sent[0][1], 7]


def test_the_one_pass_telemetry_decode_accepts_and_refuses_what_decode_does() -> None:
    from edgefleet.controller.ingest import _telemetry
    from edgefleet.shared.errors import ProtocolError
    from edgefleet.shared.protocol import decode

    good = window("cam-1", 3).to_bytes()
    payloads = [
        good,
        good.replace(b'"schema":1,', b""),  # no schema: decode refuses it
        good.replace(b'"schema":1', b'"schema":2'),
        good.replace(b'"frames":600', b'"frames":NaN'),
        good.replace(b'"frames":600', b'"frames":1e400'),
        good.replace(b'"cam-1"', b'"cam-\xff"'),
        b"[1, 2]",
        b'{"schema": 1, "device_id": "cam-1"}',
        b'{"schema": 1, "x": ' + b"[" * 20 + b"]" * 20 + b"}",
        good[:-1] + b', "extra": {"a": {"b": [1]}}}',
    ]
    assert b'"schema":1,' in good
    for p in payloads:
        try:
            expected: object = decode(TelemetryWindow, p)
        except ProtocolError as e:
            expected = type(e)
        try:
            got: object = _telemetry(p)
        except ProtocolError as e:
            got = type(e)
        assert got == expected, p[:80]


def test_a_rising_broker_drop_count_is_a_warning_and_a_metric(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from edgefleet.controller.mqtt_link import MqttLink
    from edgefleet.controller.settings import BrokerAddress

    stats = IngestStats()
    link = MqttLink(BrokerAddress("127.0.0.1", 1), "ctl", stats=stats)  # never connects
    link._on_broker_dropped(b"3")  # what had been dropped before we started: no warning
    link._on_broker_dropped(b"not a number")
    assert stats.gauges()["broker_dropped"] == 3 and "dropped" not in caplog.text
    link._on_broker_dropped(b"10")
    assert stats.gauges()["broker_dropped"] == 10
    assert "the broker dropped 7 message(s) (10 in all)" in caplog.text
