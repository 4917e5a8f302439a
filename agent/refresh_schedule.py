"""When to ask the controller again for something it announces when it changes.

The controller sends ``settings`` on ``commands`` when a sampling rule that may apply to a
device changes (controller/announce.py), and an agent asks once on every (re)connect, when
announcements sent while it was away may be lost. So while the MQTT link is up the
periodic ask is only a safety net (``connected_every_s``, an hour by default); while the
link is down nothing can be announced and the ask keeps its short period (``every_s``),
as it does after an ask that got no answer.

Pure: no clock, thread or I/O inside; times are seconds from the caller. ``announce`` may
be called from paho's thread: it only sets a flag that the asking thread clears before it
asks, so an announcement that arrives during an ask brings one more ask, never none.
"""

from __future__ import annotations


class RefreshSchedule:
    def __init__(self, every_s: float, connected_every_s: float) -> None:
        self.every_s = every_s  # seconds between asks while the link is down
        self.connected_every_s = connected_every_s  # seconds between asks while it is up
        self._last: float | None = None  # when the last ask was made
        self._short = False  # the last ask got no answer: ask again on the short period
        self._announced = False

    def announce(self) -> None:
        """The thing changed (or the link came back): ask at the next look."""
        self._announced = True

    def due(self, now: float, link_up: bool) -> bool:
        if self._announced or self._last is None:
            return True
        every = self.every_s if self._short or not link_up else self.connected_every_s
        return now >= self._last + every

    def take(self, now: float, link_up: bool) -> bool:
        """True when an ask is due; the caller then asks and reports with :meth:`done`."""
        if not self.due(now, link_up):
            return False
        self._announced = False  # before the ask: one arriving during it is kept
        return True

    def done(self, now: float, answered: bool) -> None:
        """The ask made at ``now`` got an answer (new settings or "unchanged"), or none."""
        self._last, self._short = now, not answered
