"""Telemetry windows: frames, drops, latency and confidence histograms, low-confidence share.

Pure: no clock, no I/O. The caller passes the times in (:meth:`WindowAccumulator.roll`)
and publishes what comes out. A lock makes it safe to record from the frame loop while
another thread rolls the window.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING

from edgefleet.agent.runtime.backend import Detection
from edgefleet.shared.histogram import CONFIDENCE_EDGES, LATENCY_EDGES_MS, bin_counts
from edgefleet.shared.protocol import TelemetryWindow

if TYPE_CHECKING:
    from edgefleet.agent.pipeline import FrameResult


class WindowAccumulator:
    def __init__(
        self, device_id: str, started_at: datetime, *, low_confidence: float = 0.5
    ) -> None:
        self.device_id = device_id
        self.low_confidence = low_confidence
        self._lock = threading.Lock()
        self._reset(started_at)

    def _reset(self, started_at: datetime) -> None:
        self._start = started_at
        self._frames = 0
        self._drops = 0
        self._latencies: list[float] = []
        self._confidences: list[float] = []
        self._per_class: dict[str, list[float]] = {}
        self._low = 0
        self._empty = 0
        self._model: str | None = None
        self._version: str | None = None

    def record_frame(
        self,
        latency_ms: float,
        detections: Iterable[Detection],
        *,
        model: str | None = None,
        version: str | None = None,
    ) -> None:
        dets = list(detections)
        with self._lock:
            self._frames += 1
            self._empty += not dets
            self._latencies.append(latency_ms)
            for d in dets:
                self._confidences.append(d.confidence)
                self._per_class.setdefault(d.class_name, []).append(d.confidence)
                self._low += d.confidence < self.low_confidence
            # A window is attributed to the model that served its latest frame.
            self._model, self._version = model, version

    def record_drop(self, n: int = 1) -> None:
        with self._lock:
            self._drops += n

    def roll(self, now: datetime) -> TelemetryWindow:
        """Close the window at ``now``, return it, and start the next one there."""
        with self._lock:
            window = TelemetryWindow(
                device_id=self.device_id,
                model=self._model,
                version=self._version,
                window_start=self._start,
                window_end=now,
                frames=self._frames,
                drops=self._drops,
                latency_edges_ms=list(LATENCY_EDGES_MS),
                latency_counts=bin_counts(self._latencies, LATENCY_EDGES_MS),
                confidence_edges=list(CONFIDENCE_EDGES),
                confidence_counts=bin_counts(self._confidences, CONFIDENCE_EDGES),
                per_class_confidence={
                    name: bin_counts(vals, CONFIDENCE_EDGES)
                    for name, vals in sorted(self._per_class.items())
                },
                detections=len(self._confidences),
                low_confidence=self._low,
                empty_frames=self._empty,
            )
            self._reset(now)
        return window

    # -- the pipeline's FrameSink seam -------------------------------------------------

    def on_frame(self, result: FrameResult) -> None:
        self.record_frame(
            result.latency_ms,
            result.detections,
            model=result.meta.model,
            version=result.meta.version,
        )

    def on_drop(self, n: int) -> None:
        self.record_drop(n)
