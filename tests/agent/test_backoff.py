"""The transient-fault backoff: doubles per fault, capped, jittered, reset by a success."""

from __future__ import annotations

import random

from edgefleet.agent.backoff import Backoff


def test_delay_doubles_up_to_the_cap_with_jitter_and_resets() -> None:
    b = Backoff(1.0, 8.0, random.Random(7))
    assert b.delay_s is None
    delays = [b.fault() for _ in range(6)]
    for n, d in enumerate(delays):
        ceiling = min(8.0, 2.0**n)
        assert ceiling / 2 <= d <= ceiling, (n, d)
    assert b.faults == 6 and b.delay_s == delays[-1]
    b.ok()
    assert b.delay_s is None and b.faults == 0
    assert 0.5 <= b.fault() <= 1.0


def test_jitter_spreads_a_fleet_cut_off_at_once() -> None:
    firsts = {round(Backoff(1.0, 30.0, random.Random(seed)).fault(), 6) for seed in range(50)}
    assert len(firsts) > 40
