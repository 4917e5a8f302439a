"""Announcements from the real controller app over a real Mosquitto (controller/announce.py):
a changed sampling rule makes a connected agent ask for its settings at once, and not
otherwise for its long safety interval; a stored model card makes a device running that
version ask for it at once instead of waiting out its doubling gap."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest
from edgefleet.agent.baseline import BaselineCache
from edgefleet.agent.controller_http import ControllerHttp
from edgefleet.agent.daemon import listen
from edgefleet.agent.dataloop import DataLoop
from edgefleet.agent.forward import TelemetryForwarder
from edgefleet.agent.mqtt_link import Hint, MqttLink
from edgefleet.agent.sampler import ControllerSettings, Sampler
from edgefleet.agent.spool import DiskSpool
from edgefleet.controller import registry
from edgefleet.controller.announce import card_audience, settings_audience
from edgefleet.controller.models.devices import Device
from edgefleet.controller.services import Services
from edgefleet.shared.card import ModelCard
from edgefleet.shared.sampling import SamplingConfig, StrategyConfig
from sqlmodel import Session

from edgefleet.devbroker import DevBroker
from edgefleet.tiny_models import tiny_onnx
from tests import waiting

pytestmark = pytest.mark.broker

WAIT = 30.0  # seconds; generous for a loaded 2-core machine
Serve = Callable[[Services], AbstractContextManager[httpx.Client]]
LOCAL = SamplingConfig(strategies=[StrategyConfig(name="local", kind="near_threshold")])
RULE = {"strategies": [{"name": "r", "kind": "random", "share": 0.5}]}


def wait_for(what: str, check: Callable[[], Any], timeout: float = WAIT) -> Any:
    return waiting.wait_for(what, check, timeout)


class Asked:
    """The agent's HTTP requests (path, status), from its client's observer hook."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []
        self._cond = threading.Condition()

    def __call__(self, path: str, status: int) -> None:
        with self._cond:
            self.seen.append((path.split("?", 1)[0], status))
            self._cond.notify_all()

    def wait_for(self, n: int) -> list[tuple[str, int]]:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.seen) >= n, WAIT), self.seen
            return list(self.seen)


class FakeClock:
    """The sampler's clock: the test moves it, and waits for the loop to read it."""

    def __init__(self) -> None:
        self.now = 0.0
        self.reads = 0
        self._cond = threading.Condition()

    def __call__(self) -> float:
        with self._cond:
            self.reads += 1
            self._cond.notify_all()
            return self.now

    def wait_reads(self, n: int) -> None:
        with self._cond:
            target = self.reads + n
            assert self._cond.wait_for(lambda: self.reads >= target, WAIT)


def agent_link(broker: DevBroker, device_id: str) -> MqttLink:
    hints: queue.Queue[Hint] = queue.Queue(maxsize=16)
    return MqttLink(device_id, "127.0.0.1", broker.port, hints, reconnect_delay=(1, 2))


def test_a_changed_rule_is_fetched_at_once_and_otherwise_hourly(
    linked: Services, broker: DevBroker, serve: Serve, tmp_path: Path
) -> None:
    with Session(linked.engine) as s:
        s.add(Device(device_id="cam-a", labels={"site": "a"}))
        s.add(Device(device_id="cam-b", labels={"site": "b"}))
        s.commit()
        assert settings_audience(s, {"site": "a"}) == ["cam-a"]
        assert settings_audience(s, {}) == ["cam-a", "cam-b"]
    with serve(linked) as client:
        asked, clock = Asked(), FakeClock()
        http = ControllerHttp(str(client.base_url), "cam-a", observer=asked)
        link = agent_link(broker, "cam-a")
        sampler = Sampler("cam-a", LOCAL, DiskSpool(tmp_path / "spool"), None, clock=clock,
                          settings=ControllerSettings(http, "cam-a", {"site": "a"}, LOCAL),
                          refresh_s=LOCAL.settings_refresh_s,
                          refresh_connected_s=LOCAL.settings_refresh_connected_s,
                          link_up=link.connected.is_set)  # fmt: skip
        link.on_settings = sampler.settings_announced
        link.start()
        stop = threading.Event()
        thread = threading.Thread(target=sampler.run, args=(stop,), daemon=True)
        try:
            assert link.wait_subscribed(WAIT)
            thread.start()
            path = "/v1/devices/cam-a/sampling"
            assert asked.wait_for(1) == [(path, 200)]  # at start (and for the connect)

            clock.now = LOCAL.settings_refresh_connected_s - 1  # past 5 min, under the hour
            clock.wait_reads(8)  # the sampler's loop went round a few times: no ask
            assert len(asked.seen) == 1

            started = time.monotonic()
            r = client.put("/v1/sampling", json={"selector": {"site": "a"}, "settings": RULE})
            assert r.status_code == 200, r.text
            assert asked.wait_for(2)[1] == (path, 200)
            assert time.monotonic() - started < 10
            wait_for("the new rule", lambda: [s.name for s in sampler.config.strategies] == ["r"])

            assert client.delete("/v1/sampling", params={"selector": "site=a"}).status_code == 200
            assert asked.wait_for(3)[2] == (path, 200)
            wait_for("the local settings again", lambda: sampler.config == LOCAL)

            clock.now += LOCAL.settings_refresh_connected_s  # the safety interval: unchanged
            assert asked.wait_for(4)[3] == (path, 304)

            link.stop()  # the link is down: back to the 5-minute conditional ask
            clock.now += LOCAL.settings_refresh_s
            assert asked.wait_for(5)[4] == (path, 304)
        finally:
            stop.set()
            thread.join(WAIT)
            link.stop()
            http.close()


def test_a_stored_card_is_fetched_at_once_by_a_device_running_its_version(
    linked: Services, broker: DevBroker, serve: Serve, tmp_path: Path
) -> None:
    with Session(linked.engine) as s, tiny_onnx(tmp_path / "m.onnx").open("rb") as f:
        registry.push_version(s, linked.store, linked.signing, "m", f, version="v1")
        s.add(Device(device_id="cam-1", model="m", version="v1"))
        s.add(Device(device_id="cam-2", model="m", version="v0"))
        s.commit()
        assert card_audience(s, "m", "v1") == ["cam-1"]
    with serve(linked) as client:
        asked, now = Asked(), [0.0]
        http = ControllerHttp(str(client.base_url), "cam-1", observer=asked)
        cards = BaselineCache(http, tmp_path / "baselines", retry_s=60, clock=lambda: now[0])
        spool = DiskSpool(tmp_path / "telemetry")
        data = DataLoop(TelemetryForwarder(spool, lambda _p, _t: False, lambda: False),
                        cards, None, http)  # fmt: skip
        link = agent_link(broker, "cam-1")
        listen(link, data)  # the daemon's wiring
        link.start()
        try:
            assert link.wait_subscribed(WAIT)
            path = "/v1/models/m/versions/v1/card"
            assert cards.get("m", "v1") is None  # no card yet: asked again in 60 s
            now[0] = 30.0
            assert cards.get("m", "v1") is None
            assert asked.seen == [(path, 404)]

            card = ModelCard(model="m", version="v1", images=10, conf=0.25,
                             confidence_counts=[1] * 20, detections=20)  # fmt: skip
            put = client.put(path, json=card.model_dump(mode="json", by_alias=True))
            assert put.status_code == 200, put.text
            got = wait_for("the announced card", lambda: cards.get("m", "v1"))
            assert got.confidence_counts == [1] * 20
            assert asked.seen == [(path, 404), (path, 200)]  # before its gap ran out
        finally:
            link.stop()
            http.close()
