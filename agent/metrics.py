"""Prometheus metrics of one agent, on its own registry built in ``main`` (no globals).

``AgentMetrics`` is a pipeline ``FrameSink``: frames, camera drops and per-frame model time
come from the frame loop; a change of the slot that served a frame is a model swap (a revert
too), and ``edgefleet_agent_model_info`` always names the model serving now.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from edgefleet.agent.forward import TelemetryForwarder
    from edgefleet.agent.pipeline import FrameResult

# seconds; a CPU box at 160 px runs in milliseconds, a big model on a Jetson in tens of them
INFERENCE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class AgentMetrics:
    def __init__(self, registry: CollectorRegistry, backend: str) -> None:
        self.registry, self.backend = registry, backend
        self.frames = Counter(
            "edgefleet_agent_frames", "Frames run through a model", registry=registry
        )
        self.dropped = Counter(
            "edgefleet_agent_frames_dropped", "Frames dropped before a model saw them",
            registry=registry,
        )  # fmt: skip
        self.inference = Histogram(
            "edgefleet_agent_inference_seconds",
            "Per-frame time on the model: pre-processing, run, decoding",
            buckets=INFERENCE_BUCKETS, registry=registry,
        )  # fmt: skip
        self.skipped = Counter(
            "edgefleet_agent_images_skipped", "Image files that gave no frame, by why",
            ["kind"], registry=registry,
        )  # fmt: skip
        self.thread_restarts = Counter(
            "edgefleet_agent_thread_restarts", "Supervised threads restarted after a failure",
            ["thread"], registry=registry,
        )  # fmt: skip
        self.swaps = Counter(
            "edgefleet_agent_model_swaps", "Times the serving model changed", registry=registry
        )
        self.model_info = Gauge(
            "edgefleet_agent_model_info", "The model serving now (value 1)",
            ["model", "version", "backend"], registry=registry,
        )  # fmt: skip
        self._lock = threading.Lock()
        self._slot: int | None = None
        self._labels: tuple[str, str, str] | None = None

    def on_frame(self, result: FrameResult) -> None:
        self.frames.inc()
        self.inference.observe(result.latency_ms / 1000.0)
        with self._lock:
            if result.slot_id == self._slot:
                return
            if self._slot is not None:
                self.swaps.inc()
            self._slot = result.slot_id
            self._serving(result.meta.model, result.meta.version)

    def _serving(self, model: str, version: str) -> None:
        labels = (model, version, self.backend)
        if self._labels is not None and self._labels != labels:
            self.model_info.remove(*self._labels)
        self.model_info.labels(*labels).set(1)
        self._labels = labels

    def on_drop(self, n: int) -> None:
        self.dropped.inc(n)

    def track_telemetry(self, forwarder: TelemetryForwarder) -> None:
        """Export the telemetry sender's counts, read at scrape time."""
        self.registry.register(_TelemetryCollector(forwarder))


class _TelemetryCollector(Collector):
    def __init__(self, forwarder: TelemetryForwarder) -> None:
        self.forwarder = forwarder

    def collect(self) -> Iterator[Metric]:
        f = self.forwarder
        yield CounterMetricFamily(
            "edgefleet_agent_telemetry_held_windows",
            "Telemetry windows spooled while the controller asked agents to hold (backpressure)",
            f.held,
        )
        yield GaugeMetricFamily(
            "edgefleet_agent_telemetry_hold", "1 while the controller's hold is in force",
            1 if f.hold.active() else 0,
        )  # fmt: skip


class MetricsServer:
    """prometheus_client's /metrics server on its own thread; :meth:`close` frees the port."""

    def __init__(self, registry: CollectorRegistry, port: int, addr: str) -> None:
        from prometheus_client import start_http_server

        self._server, self._thread = start_http_server(port, addr=addr, registry=registry)

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve(registry: CollectorRegistry, port: int, addr: str) -> MetricsServer:
    """Start serving ``registry`` at http://addr:port/metrics (port 0: any free port)."""
    return MetricsServer(registry, port, addr)
