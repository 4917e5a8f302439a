"""The settings' ask cadence (agent/refresh_schedule.py, Sampler): on a fake clock."""

from __future__ import annotations

from pathlib import Path

import pytest
from edgefleet.agent.refresh_schedule import RefreshSchedule
from edgefleet.agent.sampler import Sampler
from edgefleet.agent.spool import DiskSpool
from edgefleet.shared.sampling import SamplingConfig
from pydantic import ValidationError

SHORT, LONG = 300.0, 3600.0  # seconds: link down, link up


def asks(schedule: RefreshSchedule, times: list[float], link_up: bool) -> list[float]:
    """The times, of ``times``, at which an ask is made (each one answered)."""
    made = []
    for t in times:
        if schedule.take(t, link_up):
            schedule.done(t, answered=True)
            made.append(t)
    return made


def test_link_up_stretches_the_period_and_link_down_keeps_the_short_one() -> None:
    minutes = [60.0 * m for m in range(3 * 60 + 1)]  # three hours, looked at every minute
    up = asks(RefreshSchedule(SHORT, LONG), minutes, link_up=True)
    assert up == [0.0, 3600.0, 7200.0, 10800.0]
    down = asks(RefreshSchedule(SHORT, LONG), minutes, link_up=False)
    assert len(down) == 37 and down[1] == 300.0


def test_an_announcement_is_asked_at_once_and_only_once() -> None:
    s = RefreshSchedule(SHORT, LONG)
    assert asks(s, [0.0, 10.0], link_up=True) == [0.0]
    s.announce()
    assert asks(s, [20.0, 30.0, 40.0], link_up=True) == [20.0]
    assert not s.due(3600.0, link_up=True)  # the period runs from the last ask
    assert s.due(3620.0, link_up=True)


def test_an_announcement_during_an_ask_brings_another_ask() -> None:
    s = RefreshSchedule(SHORT, LONG)
    assert s.take(0.0, link_up=True)
    s.announce()  # paho's thread, while the sampler thread is asking
    s.done(0.0, answered=True)
    assert s.take(1.0, link_up=True)


def test_the_link_going_down_falls_back_to_the_short_period() -> None:
    s = RefreshSchedule(SHORT, LONG)
    assert asks(s, [0.0], link_up=True) == [0.0]
    assert not s.due(299.0, link_up=False) and s.due(300.0, link_up=False)
    assert not s.due(300.0, link_up=True)


def test_an_ask_without_an_answer_is_tried_again_on_the_short_period() -> None:
    s = RefreshSchedule(SHORT, LONG)
    assert s.take(0.0, link_up=True)
    s.done(0.0, answered=False)  # controller unreachable
    assert not s.due(299.0, link_up=True) and s.due(300.0, link_up=True)
    s.done(300.0, answered=True)
    assert not s.due(3899.0, link_up=True) and s.due(3900.0, link_up=True)


class Source:
    """A settings source like ControllerSettings: nothing new, answered or not."""

    def __init__(self) -> None:
        self.calls = 0
        self.answered = True

    def __call__(self) -> SamplingConfig | None:
        self.calls += 1
        return None


def test_the_sampler_asks_on_its_schedule(tmp_path: Path) -> None:
    now, up = [0.0], [True]
    source = Source()
    sampler = Sampler("cam-1", SamplingConfig(), DiskSpool(tmp_path / "s"), None,
                      clock=lambda: now[0], settings=source, refresh_s=SHORT,
                      refresh_connected_s=LONG, link_up=lambda: up[0])  # fmt: skip
    sampler._refresh_when_due()
    now[0] = 3599.0
    sampler._refresh_when_due()
    assert source.calls == 1
    sampler.settings_announced()
    sampler._refresh_when_due()
    assert source.calls == 2
    source.answered = False
    up[0] = False
    now[0] = 3599.0 + SHORT
    sampler._refresh_when_due()
    now[0] += SHORT
    up[0] = True  # back up, but the last ask failed: the short period still
    sampler._refresh_when_due()
    assert source.calls == 4


def test_the_connected_period_has_bounds() -> None:
    assert SamplingConfig().settings_refresh_connected_s == 3600.0
    for bad in (59, 86401):
        with pytest.raises(ValidationError):
            SamplingConfig(settings_refresh_connected_s=bad)
