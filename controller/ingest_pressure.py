"""Backpressure from the ingest to the agents: one retained fleet-wide message.

MQTT has no end-to-end flow control through a broker: Mosquitto acknowledges an agent's
telemetry on receipt and queues it for the controller's session, so a controller that falls
behind never slows agents, and past the broker's queue limit windows are dropped. So the
controller says it itself: while its ingest is behind it keeps a retained
:class:`IngestPressure` ``hold`` on ``edgefleet/v1/fleet/ingest``, and agents keep new
windows in their disk spool (agent/forward.py) until the hold is lifted or expires.

"Behind" is the backlog the controller holds unacknowledged (queued plus being written)
against its bound, the smaller of the queue's capacity and the link's Receive Maximum: a
controller slower than its input keeps that many in hand all the time. :class:`PressureGate`
decides, with hysteresis and no I/O; :class:`PressureWatch` samples, publishes and logs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from edgefleet.controller.stats import IngestStats
from edgefleet.shared.protocol import IngestPressure, utcnow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PressureConfig:
    high: float = 0.8  # fraction of the bound: at or above it for dwell_s -> hold
    low: float = 0.3  # below it for dwell_s -> release
    dwell_s: float = 5.0  # seconds a level must last before the state changes
    hold_s: float = 60.0  # seconds one hold message lasts; renewed at half of it
    tick_s: float = 1.0  # seconds between samples of the backlog


class PressureGate:
    """Hold or not, from samples of the backlog and of the broker's dropped count.

    Enter: the backlog stayed at or above ``high`` for ``dwell_s``, or the broker dropped
    messages while the backlog is not low (drops with an idle ingest are some other
    client's queue, an offline device's commands, and holding telemetry would not help).
    Leave: the backlog stayed below ``low`` for ``dwell_s``. :meth:`due` says what to
    publish; :meth:`sent` records what reached the broker, so a failed publish is retried.
    """

    def __init__(self, bound: int, config: PressureConfig = PressureConfig()) -> None:
        self.bound = max(1, bound)  # messages
        self.config = config
        self.holding = False
        self._above_since: float | None = None
        self._below_since: float | None = None
        self._dropped: float | None = None
        self._sent: bool | None = None  # None: unknown (a stale hold may be retained)
        self._renew_at = 0.0

    def observe(self, now: float, backlog: int, dropped: float | None = None) -> bool:
        """Take one sample (``now`` in seconds, monotonic); True when ``holding`` changed."""
        c = self.config
        high, low = backlog >= c.high * self.bound, backlog < c.low * self.bound
        drops = dropped is not None and self._dropped is not None and dropped > self._dropped
        if dropped is not None:
            self._dropped = dropped
        self._above_since = _since(self._above_since, now, high)
        self._below_since = _since(self._below_since, now, low)
        if not self.holding:
            lasted = self._above_since is not None and now - self._above_since >= c.dwell_s
            self.holding = lasted or (drops and not low)
            return self.holding
        if self._below_since is not None and now - self._below_since >= c.dwell_s:
            self.holding = False
            return True
        return False

    def due(self, now: float) -> bool | None:
        """The hold flag to publish now (a hold is renewed at half its length), or None."""
        if self.holding:
            return True if self._sent is not True or now >= self._renew_at else None
        return False if self._sent is not False else None

    def sent(self, hold: bool, now: float) -> None:
        self._sent = hold
        self._renew_at = now + self.config.hold_s / 2


def _since(start: float | None, now: float, level: bool) -> float | None:
    """When a level began: kept while it lasts, None once it ends."""
    if not level:
        return None
    return now if start is None else start


class PressureWatch:
    """A thread that samples the backlog every ``tick_s``, publishes what the gate says
    (through ``send``: True once the broker has it), exports the ``hold`` gauge and
    logs one warning on entering a hold and one line on leaving it."""

    def __init__(
        self,
        backlog: Callable[[], int],  # messages held unacknowledged (IngestQueue.outstanding)
        bound: int,  # messages: min(queue capacity, the link's Receive Maximum)
        send: Callable[[IngestPressure], bool],
        stats: IngestStats,
        config: PressureConfig = PressureConfig(),
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = utcnow,
    ) -> None:
        self.backlog, self.send, self.stats = backlog, send, stats
        self.gate = PressureGate(bound, config)
        self.clock, self.wall = clock, wall
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        stats.set_gauge("hold", 0)

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="ingest-pressure", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:  # seconds
        # No release on the way out: an unrenewed hold expires within hold_s by itself.
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.gate.config.tick_s):
            try:
                self.tick()
            except Exception:  # a failed sample must not end the watch
                log.exception("watching the ingest backlog failed")

    def tick(self) -> None:
        now, backlog = self.clock(), self.backlog()
        if self.gate.observe(now, backlog, self.stats.gauges().get("broker_dropped")):
            self._log_change(backlog)
        self.stats.set_gauge("hold", 1 if self.gate.holding else 0)
        hold = self.gate.due(now)
        if hold is not None and self.send(self._message(hold)):
            self.gate.sent(hold, now)

    def _message(self, hold: bool) -> IngestPressure:
        if not hold:
            return IngestPressure(hold=False)
        seconds = self.gate.config.hold_s
        return IngestPressure(
            hold=True, until=self.wall() + timedelta(seconds=seconds), seconds=seconds
        )

    def _log_change(self, backlog: int) -> None:
        if self.gate.holding:
            log.warning(
                "ingest behind (%d/%d messages held unstored): agents told to keep telemetry "
                "in their spools", backlog, self.gate.bound,
            )  # fmt: skip
        else:
            log.info("ingest caught up (%d/%d): agents may send telemetry again",
                     backlog, self.gate.bound)  # fmt: skip
