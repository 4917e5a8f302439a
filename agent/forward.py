"""Store-and-forward of telemetry windows: spooled on disk, sent when the broker takes them.

Every window goes to the spool first; a sender thread publishes the oldest ones while the
broker is connected and removes each only after the broker acknowledged it (QoS 1 PUBACK).
A broker outage or an agent restart therefore loses nothing within the spool's bound; a
window whose acknowledgement was lost in a disconnect may arrive twice.

Backpressure: while the controller's ingest is behind it keeps a retained hold on the fleet
topic (:class:`IngestPressure`). Under a hold the sender leaves the spool alone: new windows
wait on disk (its bounds apply), and sending resumes when the hold is lifted or expires.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime

from edgefleet.agent.spool import DiskSpool
from edgefleet.shared.protocol import IngestPressure, TelemetryWindow, utcnow

log = logging.getLogger(__name__)

Publish = Callable[[bytes, float], bool]  # payload, timeout (s) -> acknowledged


class IngestHold:
    """The hold the controller asked for, if any, and when it ends by itself.

    A hold ends at the earliest of: ``seconds`` after it arrived (or the broker's remaining
    message expiry, if shorter), its ``until`` on this device's clock, or a ``hold=False``.
    So a stale retained hold (a controller that died holding) never stops telemetry for good.
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = utcnow,
    ) -> None:
        self.clock, self.wall = clock, wall
        self._ends = float("-inf")  # monotonic seconds
        self._until: datetime | None = None
        self._lock = threading.Lock()

    def apply(self, pressure: IngestPressure, expiry_s: float | None = None) -> None:
        """A message on the fleet topic; ``expiry_s``: the broker's remaining expiry."""
        seconds = pressure.seconds if pressure.hold else 0.0
        if expiry_s is not None:
            seconds = min(seconds, expiry_s)
        was = self.active()
        with self._lock:
            self._ends = self.clock() + seconds
            self._until = pressure.until
        now = self.active()
        if now and not was:
            log.warning("controller ingest behind: keeping telemetry in the spool for up to %.0f s",
                        seconds)  # fmt: skip
        elif was and not now:
            log.info("controller ingest caught up: sending spooled telemetry")

    def active(self) -> bool:
        with self._lock:
            ends, until = self._ends, self._until
        if self.clock() >= ends:
            return False
        return until is None or self.wall() < until


class TelemetryForwarder:
    def __init__(
        self,
        spool: DiskSpool,
        publish: Publish,
        connected: Callable[[], bool],
        *,
        hold: IngestHold | None = None,  # the controller's backpressure; None: never held
        ack_timeout_s: float = 5.0,  # seconds to wait for one PUBACK
        interval_s: float = 1.0,  # seconds between looks at the spool
    ) -> None:
        self.spool, self.publish, self.connected = spool, publish, connected
        self.hold = hold or IngestHold()
        self.ack_timeout_s, self.interval_s = ack_timeout_s, interval_s
        self.sent = 0
        self.held = 0  # windows spooled while a hold was in force
        self.held_rounds = 0  # looks at the spool that sent nothing because of a hold
        self._wake = threading.Event()

    def submit(self, window: TelemetryWindow) -> None:
        self.spool.put(window.to_bytes())
        if self.hold.active():
            self.held += 1
        self._wake.set()

    def flush(self) -> int:
        """Send what the spool holds, oldest first, until done, the broker stops taking or
        the controller asks to hold."""
        if self.hold.active():
            self.held_rounds += 1
            return 0
        sent = 0
        for entry in self.spool.entries():
            if not self.connected() or self.hold.active():
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
