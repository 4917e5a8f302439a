"""Sinks against real things: a file, an HTTP server, a Mosquitto; bounded queues count drops."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from edgefleet.agent.config import parse_config
from edgefleet.agent.pipeline import FrameResult
from edgefleet.agent.sinks import JsonLinesWriter, QueuedSink, WebhookPoster, build_sink
from edgefleet.agent.store import ModelPointer
from edgefleet.shared.errors import ConfigError
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from edgefleet.devbroker import DevBroker
from edgefleet.runtime.backend import Detection

POINTER = ModelPointer("shapes", "v2", 2, "0" * 64, "x.onnx")


def result(i: int) -> FrameResult:
    det = Detection(1, "square", 0.9, (1.0, 2.0, 30.5, 40.25))
    return FrameResult(slot_id=1, meta=POINTER, latency_ms=4.5 + i, detections=[det])


def wait_until(check, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_jsonl_sink_writes_one_object_per_frame(tmp_path: Path):
    path = tmp_path / "out" / "detections.jsonl"
    writer = JsonLinesWriter(path)
    sink = QueuedSink("jsonl", writer, "cam-1", clock=lambda: 1700000000.5)
    sink.start()
    for i in range(5):
        sink.on_frame(result(i))
    sink.stop()
    writer.close()
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert len(lines) == 5
    assert sink.sent == 5
    assert sink.dropped == 0
    assert lines[0] == {
        "device_id": "cam-1",
        "at": 1700000000.5,
        "model": "shapes",
        "version": "v2",
        "latency_ms": 4.5,
        "error": None,
        "detections": [
            {"class_id": 1, "class_name": "square", "confidence": 0.9,
             "box_xyxy": [1.0, 2.0, 30.5, 40.25]},
        ],
    }  # fmt: skip


class _Hook(BaseHTTPRequestHandler):
    bodies: list[bytes]
    gate: threading.Event

    def do_POST(self) -> None:
        self.gate.wait(20)  # a slow receiver, released by the test
        n = int(self.headers["Content-Length"])
        self.bodies.append(self.rfile.read(n))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[bytes], threading.Event]]:
    bodies: list[bytes] = []
    gate = threading.Event()
    handler = type("Hook", (_Hook,), {"bodies": bodies, "gate": gate})
    server = HTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", bodies, gate
    gate.set()
    server.shutdown()
    server.server_close()
    t.join(5)


def test_slow_webhook_drops_and_counts_instead_of_blocking(webhook):
    url, bodies, gate = webhook
    sink = QueuedSink("webhook", WebhookPoster(url, timeout_s=30), "cam-1", max_queue=2)
    sink.start()
    t0 = time.monotonic()
    sink.on_frame(result(0))
    wait_until(sink._queue.empty)  # the worker holds frame 0 at the receiver
    for i in range(1, 11):
        sink.on_frame(result(i))  # 2 fit in the queue, 8 are dropped
    assert time.monotonic() - t0 < 5  # the frame loop never waited for the network
    assert sink.dropped == 8
    gate.set()
    wait_until(lambda: len(bodies) == 3)
    sink.stop()
    assert [json.loads(b)["latency_ms"] for b in bodies] == [4.5, 5.5, 6.5]
    assert sink.sent == 3


def test_unreachable_webhook_counts_failures(tmp_path: Path):
    from edgefleet.devbroker import free_port

    sink = QueuedSink("webhook", WebhookPoster(f"http://127.0.0.1:{free_port()}/x", 2), "cam-1")
    sink.start()
    sink.on_frame(result(0))
    wait_until(lambda: sink.failed == 1)
    sink.stop()
    assert sink.sent == 0


@pytest.mark.broker
def test_mqtt_sink_publishes_on_a_local_topic(tmp_path: Path):
    broker = DevBroker(tmp_path / "mosquitto").start()
    got: list[bytes] = []
    sub = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id="sink-reader", protocol=MQTTProtocolVersion.MQTTv5
    )
    subscribed = threading.Event()
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.on_message = lambda _c, _u, msg: got.append(bytes(msg.payload))
    cfg = parse_config(
        {
            "device_id": "cam-1",
            "controller_url": "http://127.0.0.1:1",
            "mqtt_url": broker.url,
            "data_dir": "data",
            "source": {"kind": "folder", "path": "imgs"},
            "sinks": [{"kind": "mqtt", "url": broker.url, "topic": "line/3/detections", "qos": 1}],
        },
        base=tmp_path,
    )
    sink, release = build_sink(cfg.sinks[0], "cam-1")
    try:
        host, port = broker.url.removeprefix("mqtt://").split(":")
        sub.connect(host, int(port))
        sub.loop_start()
        sub.subscribe("line/3/detections", qos=1)
        assert subscribed.wait(10)
        sink.start()
        for i in range(3):
            sink.on_frame(result(i))
        wait_until(lambda: len(got) == 3)
    finally:
        sink.stop()
        release()
        sub.disconnect()
        sub.loop_stop()
        broker.stop()
    assert [json.loads(p)["latency_ms"] for p in got] == [4.5, 5.5, 6.5]


def test_sink_config_is_validated(tmp_path: Path):
    base = {
        "device_id": "cam-1",
        "controller_url": "http://127.0.0.1:1",
        "mqtt_url": "mqtt://127.0.0.1:1883",
        "data_dir": "data",
        "source": {"kind": "folder", "path": "imgs"},
    }
    cfg = parse_config({**base, "sinks": [{"kind": "jsonl", "path": "out/d.jsonl"}]}, base=tmp_path)
    assert cfg.sinks[0].path == tmp_path / "out" / "d.jsonl"  # anchored at the config's folder
    with pytest.raises(ConfigError, match="sinks"):
        parse_config({**base, "sinks": [{"kind": "fax"}]}, base=tmp_path)
    with pytest.raises(ConfigError, match="http"):
        WebhookPoster("ftp://example.org/x")
    bad_topic = parse_config(
        {**base, "sinks": [{"kind": "mqtt", "topic": "a/#"}]}, base=tmp_path
    ).sinks[0]
    with pytest.raises(ConfigError, match="plain topic"):
        build_sink(bad_topic, "cam-1")
