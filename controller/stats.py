"""Counters and gauges of the MQTT ingest, shared between paho's thread, the writer
threads and the REST handlers."""

from __future__ import annotations

import threading
from collections import Counter


class IngestStats:
    """Thread-safe counters (received / stored / malformed / failed per channel) and
    gauges (``queue_depth``, ``queue_capacity``, ``broker_dropped``, ``hold``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._gauges: dict[str, float] = {}

    def set_gauge(self, name: str, value: float) -> None:
        with self._lock:
            self._gauges[name] = value

    def gauges(self) -> dict[str, float]:
        with self._lock:
            return dict(self._gauges)

    def count(self, what: str, channel: str, n: int = 1) -> None:
        with self._lock:
            self._counts[f"{what}.{channel}"] += n

    def get(self, what: str, channel: str | None = None) -> int:
        with self._lock:
            if channel is not None:
                return self._counts[f"{what}.{channel}"]
            return sum(v for k, v in self._counts.items() if k.split(".")[0] == what)

    def snapshot(self) -> dict[str, dict[str, int]]:
        """``{"received": {"state": 3, ...}, "malformed": {...}, "failed": {...}}``."""
        out: dict[str, dict[str, int]] = {
            "received": {}, "stored": {}, "malformed": {}, "failed": {}
        }  # fmt: skip
        with self._lock:
            for key, value in self._counts.items():
                what, _, channel = key.partition(".")
                out.setdefault(what, {})[channel] = value
        return out
