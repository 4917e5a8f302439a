"""Five-field cron expressions: which minutes are open. (pure)

``minute hour day-of-month month day-of-week``, Sunday = 0 or 7. Fields take ``*``,
``a``, ``a-b``, ``a,b``, and ``/step`` on any of those.
"""

from __future__ import annotations

from datetime import datetime

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
