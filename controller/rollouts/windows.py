"""Maintenance windows: may a device take a new model at this instant? (pure)

A window's cron expression (rollouts/cron.py) names the open minutes, read in the
window's time zone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from zoneinfo import ZoneInfo

from edgefleet.controller.rollouts.cron import cron_matches
from edgefleet.controller.rollouts.spec import MaintenanceWindow


def window_open(window: MaintenanceWindow, now: datetime) -> bool:
    return cron_matches(window.cron, now.astimezone(ZoneInfo(window.timezone)))


def may_install(
    windows: Sequence[MaintenanceWindow], labels: Mapping[str, str], now: datetime
) -> bool:
    """True unless a window covers this device's labels and none of those is open now."""
    from edgefleet.controller.rollouts.planner import matches

    mine = [w for w in windows if matches(w.selector, labels)]
    return not mine or any(window_open(w, now) for w in mine)


_HORIZON_MIN = 8 * 24 * 60  # minutes looked ahead: every weekly window opens within it


def next_open(
    windows: Sequence[MaintenanceWindow], labels: Mapping[str, str], now: datetime
) -> datetime | None:
    """When this device may next take a new model: ``now`` when it may now, the first
    minute one of its windows opens, or None when none opens within eight days."""
    from datetime import timedelta

    from edgefleet.controller.rollouts.planner import matches

    mine = [w for w in windows if matches(w.selector, labels)]
    if not mine:
        return now
    start = now.replace(second=0, microsecond=0)
    for minute in range(_HORIZON_MIN):
        at = now if minute == 0 else start + timedelta(minutes=minute)
        if any(window_open(w, at) for w in mine):
            return at
    return None
