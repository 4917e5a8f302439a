"""Counters of the MQTT ingest, shared between paho's thread and the REST handlers."""

from __future__ import annotations

import threading
from collections import Counter


class IngestStats:
    """Thread-safe counters: received / malformed / failed per channel."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

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
        out: dict[str, dict[str, int]] = {"received": {}, "malformed": {}, "failed": {}}
        with self._lock:
            for key, value in self._counts.items():
                what, _, channel = key.partition(".")
                out.setdefault(what, {})[channel] = value
        return out
