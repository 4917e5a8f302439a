"""Where detections go besides telemetry: a local MQTT topic, a JSON Lines file, a webhook.

Every sink is a :class:`QueuedSink`: the frame loop only puts a small dict into a bounded
queue (never blocks, never waits on the network or the disk); one worker thread per sink
delivers. When a sink falls behind, new results are dropped and counted (``dropped``), so a
slow webhook can cost detections on that webhook, never frames on the camera.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from edgefleet.shared.errors import ConfigError, TransportError

if TYPE_CHECKING:
    from edgefleet.agent.pipeline import FrameResult

log = logging.getLogger(__name__)

DEFAULT_QUEUE = 256  # results waiting per sink
STOP_WAIT_S = 0.2  # seconds between looks at the stop flag


def frame_payload(result: FrameResult, device_id: str, at: float) -> dict[str, Any]:
    """What every sink sends for one frame (``at``: seconds since the epoch)."""
    return {
        "device_id": device_id,
        "at": round(at, 6),
        "model": result.meta.model,
        "version": result.meta.version,
        "latency_ms": round(result.latency_ms, 3),
        "error": result.error,
        "detections": [d.to_json() for d in result.detections],
    }


class QueuedSink:
    """A pipeline ``FrameSink``: bounded queue in, one delivery thread out."""

    def __init__(
        self,
        name: str,
        deliver: Callable[[bytes], None],
        device_id: str,
        *,
        max_queue: int = DEFAULT_QUEUE,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.name, self.device_id = name, device_id
        self._deliver = deliver
        self._clock = clock or time.time
        self._queue: queue.Queue[bytes] = queue.Queue(maxsize=max_queue)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"sink-{name}", daemon=True)
        self.sent = 0
        self.dropped = 0  # full queue
        self.failed = 0  # delivery raised

    def start(self) -> None:
        self._thread.start()

    def on_frame(self, result: FrameResult) -> None:
        line = json.dumps(frame_payload(result, self.device_id, self._clock())).encode()
        try:
            self._queue.put_nowait(line)
        except queue.Full:
            self.dropped += 1

    def on_drop(self, n: int) -> None:
        pass  # a camera frame nobody ran: nothing to send

    def _run(self) -> None:
        while not (self._stop.is_set() and self._queue.empty()):
            try:
                item = self._queue.get(timeout=STOP_WAIT_S)
            except queue.Empty:
                continue
            try:
                self._deliver(item)
            except (OSError, TransportError) as e:
                self.failed += 1
                if self.failed == 1 or self.failed % 100 == 0:
                    log.warning(
                        "sink %s: delivery failed (%d so far): %s", self.name, self.failed, e
                    )
            else:
                self.sent += 1

    def stop(self, timeout: float = 3.0) -> None:
        """Deliver what is queued (within ``timeout``), then end the thread."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)


class JsonLinesWriter:
    """Appends one line per frame; opened once, flushed per line so a crash loses one."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("ab")

    def __call__(self, line: bytes) -> None:
        self._file.write(line + b"\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class WebhookPoster:
    """POSTs each result as JSON; any answer but 2xx is a failed delivery."""

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        if urlsplit(url).scheme not in ("http", "https"):
            raise ConfigError(f"webhook url must be http(s): {url}")
        self.url, self.timeout_s = url, timeout_s

    def __call__(self, body: bytes) -> None:
        req = urllib.request.Request(  # noqa: S310 - scheme checked in __init__
            self.url, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:  # noqa: S310
                resp.read()
        except urllib.error.URLError as e:
            raise TransportError(f"webhook {self.url}: {e.reason}") from e


class MqttPublisher:
    """Publishes each result on a topic of a (usually local) broker, QoS 0 or 1."""

    def __init__(self, url: str, topic: str, client_id: str, qos: int = 0) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

        parts = urlsplit(url)
        if parts.scheme != "mqtt" or not parts.hostname:
            raise ConfigError(f"sink mqtt url must be mqtt://host:port: {url}")
        if not topic or any(c in topic for c in "#+"):
            raise ConfigError(f"sink topic must be a plain topic name: {topic!r}")
        self.topic, self.qos = topic, qos
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5
        )
        self._client.connect_async(parts.hostname, parts.port or 1883)
        self._client.loop_start()  # paho reconnects by itself; publishes queue meanwhile

    def __call__(self, payload: bytes) -> None:
        self._client.publish(self.topic, payload, qos=self.qos)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def build_sink(spec: Any, device_id: str) -> tuple[QueuedSink, Callable[[], None]]:
    """A started-ready sink from its config and the function that releases its resource."""
    kind = spec.kind
    if kind == "jsonl":
        writer = JsonLinesWriter(Path(spec.path))
        return QueuedSink("jsonl", writer, device_id, max_queue=spec.max_queue), writer.close
    if kind == "webhook":
        poster = WebhookPoster(spec.url, spec.timeout_s)
        return QueuedSink("webhook", poster, device_id, max_queue=spec.max_queue), lambda: None
    if kind == "mqtt":
        pub = MqttPublisher(spec.url, spec.topic, f"{device_id}-sink", spec.qos)
        return QueuedSink("mqtt", pub, device_id, max_queue=spec.max_queue), pub.close
    raise ConfigError(f"unknown sink kind {kind!r}")
