"""Store-and-forward of telemetry windows: spooled on disk, sent when the broker takes them.

Every window goes to the spool first; a sender thread publishes the oldest ones while the
broker is connected and removes each only after the broker acknowledged it (QoS 1 PUBACK).
A broker outage or an agent restart therefore loses nothing within the spool's bound; a
window whose acknowledgement was lost in a disconnect may arrive twice.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from edgefleet.agent.spool import DiskSpool
from edgefleet.shared.protocol import TelemetryWindow

log = logging.getLogger(__name__)

Publish = Callable[[bytes, float], bool]  # payload, timeout (s) -> acknowledged


class TelemetryForwarder:
    def __init__(
        self,
        spool: DiskSpool,
        publish: Publish,
        connected: Callable[[], bool],
        *,
        ack_timeout_s: float = 5.0,  # seconds to wait for one PUBACK
        interval_s: float = 1.0,  # seconds between looks at the spool
    ) -> None:
        self.spool, self.publish, self.connected = spool, publish, connected
        self.ack_timeout_s, self.interval_s = ack_timeout_s, interval_s
        self.sent = 0
        self._wake = threading.Event()

    def submit(self, window: TelemetryWindow) -> None:
        self.spool.put(window.to_bytes())
        self._wake.set()

    def flush(self) -> int:
        """Send what the spool holds, oldest first, until done or the broker stops taking."""
        sent = 0
        for entry in self.spool.entries():
            if not self.connected():
                break
            try:
                payload = entry.path().read_bytes()
            except FileNotFoundError:
                continue  # dropped for room meanwhile
            if not self.publish(payload, self.ack_timeout_s):
                break
            self.spool.remove(entry)
            sent += 1
        self.sent += sent
        return sent

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self._wake.wait(self.interval_s)
            self._wake.clear()
            try:
                self.flush()
            except OSError as e:
                log.warning("telemetry spool unreadable: %s", e)
