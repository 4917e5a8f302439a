"""How long to wait before trying again after a transient fault.

A transient fault (the controller restarting, the broker gone, a download cut off, a
timeout) is no reason to give up on an install, nor to wait a whole poll interval: the
agent tries again after a delay that doubles per fault in a row, from ``base_s`` up to
``cap_s``, with jitter so a fleet cut off at the same moment does not come back at the
same moment. The first success resets it.

Pure: no clock, sleep or I/O inside; the random source is passed in.
"""

from __future__ import annotations

import random


class Backoff:
    def __init__(self, base_s: float, cap_s: float, rng: random.Random | None = None) -> None:
        self.base_s = base_s  # seconds before the first retry (at most)
        self.cap_s = max(cap_s, base_s)  # seconds between retries at most
        self._rng = rng or random.Random()
        self.faults = 0  # transient faults in a row
        self.delay_s: float | None = None  # the wait now due; None: no fault pending

    def fault(self) -> float:
        """One more fault in a row: the seconds to wait before the next try, in
        [half, all] of ``min(cap, base * 2**faults)`` (equal jitter)."""
        ceiling = min(self.cap_s, self.base_s * 2.0**self.faults)
        self.faults += 1
        self.delay_s = ceiling * self._rng.uniform(0.5, 1.0)
        return self.delay_s

    def ok(self) -> None:
        """The thing worked: the next fault starts from ``base_s`` again."""
        self.faults, self.delay_s = 0, None
