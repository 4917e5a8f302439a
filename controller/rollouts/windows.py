"""Maintenance windows: may a device take a new model at this instant? (pure)

A five-field cron expression names the open minutes (``minute hour day-of-month month
day-of-week``, Sunday = 0 or 7), read in the window's time zone. Fields take ``*``,
``a``, ``a-b``, ``a,b``, and ``/step`` on any of those.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

if TYPE_CHECKING:
    from edgefleet.controller.rollouts.spec import MaintenanceWindow

_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
_NAMES = ("minute", "hour", "day of month", "month", "day of week")


def _field(text: str, lo: int, hi: int, name: str) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        base, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if base == "*":
            start, end = lo, hi
        elif "-" in base:
            a, b = base.split("-", 1)
            start, end = int(a), int(b)
        else:
            start = end = int(base)
        if not (lo <= start <= end <= hi) or step < 1:
            raise ValueError(f"cron {name} {part!r} is outside {lo}-{hi}")
        values.update(range(start, end + 1, step))
    return frozenset(values)


def parse_cron(expr: str) -> tuple[frozenset[int], ...]:
    """The open values of each of the five fields; ValueError on anything else."""
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(f"cron {expr!r}: expected 5 fields (minute hour day month weekday)")
    try:
        parsed = tuple(
            _field(f, lo, hi, name)
            for f, (lo, hi), name in zip(fields, _RANGES, _NAMES, strict=True)
        )
    except ValueError as e:
        raise ValueError(str(e) if "cron" in str(e) else f"cron {expr!r}: {e}") from e
    dow = parsed[4]
    return (*parsed[:4], dow | {0} if 7 in dow else dow)


def cron_matches(expr: str, when: datetime) -> bool:
    minute, hour, day, month, dow = parse_cron(expr)
    weekday = (when.weekday() + 1) % 7  # Python: Monday = 0; cron: Sunday = 0
    return (
        when.minute in minute
        and when.hour in hour
        and when.day in day
        and when.month in month
        and weekday in dow
    )


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
