"""``edgefleet device refresh ID``: the controller sends the device a refresh command over
the real broker (the device then retries what it refused), and audits who asked."""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager

import httpx
import paho.mqtt.client as mqtt
import pytest
from edgefleet.controller.models.audit import AuditEntry
from edgefleet.controller.models.devices import Device
from edgefleet.controller.services import Services
from edgefleet.shared.protocol import Command, decode
from edgefleet.shared.topics import Channel, device_topic
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from sqlmodel import Session, select

from edgefleet.devbroker import DevBroker

WAIT = 30.0  # seconds; generous for a loaded 2-core machine
Serve = Callable[[Services], AbstractContextManager[httpx.Client]]


class Listener:
    """A device's side of the broker: what arrives on its commands topic."""

    def __init__(self, broker: DevBroker, device_id: str) -> None:
        self.got: list[bytes] = []
        self.message = threading.Event()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=device_id, protocol=MQTTProtocolVersion.MQTTv5
        )
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_a: self.subscribed.set()
        self.client.on_connect = lambda c, *_a: c.subscribe(
            str(device_topic(device_id, Channel.COMMANDS)), qos=1
        )
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()

    def _on_message(self, _c: object, _u: object, m: mqtt.MQTTMessage) -> None:
        self.got.append(m.payload)
        self.message.set()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.mark.broker
def test_refresh_reaches_the_device_and_is_audited(
    linked: Services, broker: DevBroker, serve: Serve
) -> None:
    with Session(linked.engine) as s:
        s.add(Device(device_id="cam-1"))
        s.commit()
    device = Listener(broker, "cam-1")
    try:
        assert device.subscribed.wait(WAIT)
        with serve(linked) as client:
            r = client.post("/v1/devices/cam-1/refresh", headers={"X-Edgefleet-Actor": "ana"})
            assert r.status_code == 200, r.text
            unknown = client.post("/v1/devices/nobody/refresh")
            assert unknown.status_code == 404
        assert device.message.wait(WAIT)
        assert decode(Command, device.got[0]).command == "refresh"
    finally:
        device.close()
    with Session(linked.engine) as s:
        rows = s.exec(select(AuditEntry).where(AuditEntry.action == "refresh")).all()
    assert [(a.actor, a.target) for a in rows] == [("ana", "device:cam-1")]


def test_refresh_without_a_broker_is_a_clear_503(services: Services, serve: Serve) -> None:
    with Session(services.engine) as s:
        s.add(Device(device_id="cam-1"))
        s.commit()
    with serve(services) as client:
        r = client.post("/v1/devices/cam-1/refresh")
    assert r.status_code == 503
    assert "broker is not connected" in r.json()["detail"]
