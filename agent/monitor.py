"""Telemetry windows: frames, drops, latency and confidence histograms, low-confidence share.

The confidence histograms, detections and empty frames are the model card's measurement
(:class:`~edgefleet.shared.measure.ConfidenceTally`): the detections and the candidates
below the device's own cut go in together and the tally keeps those above
``MEASURE_CONF``, so a device whose ``conf`` differs from the card's still measures what
the card measured.

Pure: no clock, no I/O. The caller passes the times in (:meth:`WindowAccumulator.roll`)
and publishes what comes out. A lock makes it safe to record from the frame loop while
another thread rolls the window.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING

from edgefleet.shared.histogram import LATENCY_EDGES_MS, bin_counts
from edgefleet.shared.measure import ConfidenceTally
from edgefleet.shared.protocol import TelemetryWindow

from edgefleet.runtime.backend import Detection

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
        self._tally = ConfidenceTally()
        self._low = 0
        self._fallbacks = 0
        self._model: str | None = None
        self._version: str | None = None

    def record_frame(
        self,
        latency_ms: float,
        detections: Iterable[Detection],
        *,
        candidates: Iterable[Detection] = (),  # scored below the device's cut
        model: str | None = None,
        version: str | None = None,
    ) -> None:
        boxes = [*detections, *candidates]
        with self._lock:
            self._frames += 1
            self._latencies.append(latency_ms)
            counted = self._tally.add_frame(boxes)
            self._low += sum(c < self.low_confidence for c in counted)
            # A window is attributed to the model that served its latest frame.
            self._model, self._version = model, version

    def record_fallback(self, n: int = 1) -> None:
        """The device fell back from the model it should run (it would not load): the
        controller counts this against a canary of that version."""
        with self._lock:
            self._fallbacks += n

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
                confidence_edges=list(self._tally.edges),
                confidence_counts=self._tally.counts(),
                per_class_confidence=self._tally.per_class(),
                detections=self._tally.detections,
                low_confidence=self._low,
                empty_frames=self._tally.empty_frames,  # no detection by the card's measure
                fallbacks=self._fallbacks,
            )
            self._reset(now)
        return window

    # -- the pipeline's FrameSink seam -------------------------------------------------

    def on_frame(self, result: FrameResult) -> None:
        self.record_frame(
            result.latency_ms,
            result.detections,
            candidates=result.candidates or (),
            model=result.meta.model,
            version=result.meta.version,
        )

    def on_drop(self, n: int) -> None:
        self.record_drop(n)
