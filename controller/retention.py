"""Telemetry retention: raw windows older than an age become per-hour aggregates.

A raw window is one minute of one device; drift charts and rollout gates need the
histograms summed, not the minutes. :func:`fold` (pure) sums windows per device, model
version, hour (of ``window_end``) and histogram edges; :func:`compact` (the shell) adds
those sums into ``telemetry_hour`` and deletes the windows, one transaction per chunk,
so the database grows with devices x hours, not with windows. :class:`Retention` runs it
every ``every`` on its own thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from edgefleet.controller.models.telemetry import (
    TelemetryBase,
    TelemetryHourRow,
    TelemetryWindowRow,
)
from edgefleet.shared.protocol import utcnow
from sqlalchemy import delete, text
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

log = logging.getLogger(__name__)

CHUNK = 5000  # raw windows per transaction
HOUR = timedelta(hours=1)
# pg_try_advisory_xact_lock key of compaction: "edgeret", apart from migrations and TUF
_PG_LOCK_KEY = int.from_bytes(b"edgeret", "big")

Key = tuple[str, str | None, str | None, datetime, tuple[float, ...], tuple[float, ...]]


@dataclass(frozen=True)
class RetentionConfig:
    max_age: timedelta = timedelta(days=7)  # raw windows kept this long
    every: timedelta = timedelta(hours=1)  # how often compaction runs


DEFAULT_RETENTION = RetentionConfig()


@dataclass
class HourSum:
    """The sum of one device's windows in one hour (same model version, same edges)."""

    key: Key
    windows: int = 0
    frames: int = 0
    drops: int = 0
    detections: int = 0
    low_confidence: int = 0
    window_end: datetime | None = None
    latency_counts: list[int] = field(default_factory=list)
    confidence_counts: list[int] = field(default_factory=list)
    per_class: dict[str, list[int]] = field(default_factory=dict)

    def add(self, w: TelemetryBase, windows: int = 1) -> None:
        self.windows += windows
        self.frames += w.frames
        self.drops += w.drops
        self.detections += w.detections
        self.low_confidence += w.low_confidence
        end = _utc(w.window_end)
        self.window_end = end if self.window_end is None else max(self.window_end, end)
        self.latency_counts = _add(self.latency_counts, w.latency_counts)
        self.confidence_counts = _add(self.confidence_counts, w.confidence_counts)
        for name, counts in w.per_class_confidence.items():
            self.per_class[name] = _add(self.per_class.get(name, []), counts)


def hour_of(t: datetime) -> datetime:
    t = _utc(t)
    return t.replace(minute=0, second=0, microsecond=0)


def key_of(w: TelemetryBase) -> Key:
    return (w.device_id, w.model, w.version, hour_of(w.window_end),
            tuple(w.latency_edges_ms), tuple(w.confidence_edges))  # fmt: skip


def fold(windows: Iterable[TelemetryBase]) -> dict[Key, HourSum]:
    """Sum windows per (device, model, version, hour, edges). Pure."""
    sums: dict[Key, HourSum] = {}
    for w in windows:
        k = key_of(w)
        sums.setdefault(k, HourSum(k)).add(w)
    return sums


def compact(engine: Engine, cutoff: datetime) -> int:
    """Fold every raw window that ended before ``cutoff`` into hours; how many went."""
    total = 0
    while True:
        with Session(engine) as s:
            if not _compaction_lock(s):
                log.info("another controller is compacting telemetry; skipped")
                return total
            stmt = (
                select(TelemetryWindowRow)
                .where(col(TelemetryWindowRow.window_end) < cutoff)
                .order_by(col(TelemetryWindowRow.id))
                .limit(CHUNK)
            )
            rows = list(s.exec(stmt).all())
            if not rows:
                return total
            _merge(s, fold(rows))
            ids = [r.id for r in rows]
            s.execute(delete(TelemetryWindowRow).where(col(TelemetryWindowRow.id).in_(ids)))
            s.commit()
        total += len(rows)


def _compaction_lock(s: Session) -> bool:
    """Whether this transaction may compact (PostgreSQL: no other replica is; SQLite has one
    write lock). Two replicas folding the same windows would each add them to the hours:
    the transaction-scoped advisory lock makes one of them skip its round."""
    if s.get_bind().dialect.name != "postgresql":
        return True
    got = s.execute(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
    return bool(got.scalar_one())


def _merge(s: Session, sums: dict[Key, HourSum]) -> None:
    """Add ``sums`` into the hour rows already there (an hour compacted in two runs)."""
    devices = sorted({k[0] for k in sums})
    hours = sorted({k[3] for k in sums})
    stmt = select(TelemetryHourRow).where(
        col(TelemetryHourRow.device_id).in_(devices),
        col(TelemetryHourRow.window_start).in_(hours),
    )
    existing = {key_of_hour(r): r for r in s.exec(stmt)}
    for k, add in sums.items():
        row = existing.get(k)
        if row is not None:
            total = HourSum(k)
            total.add(row, windows=row.windows)
            _combine(total, add)
            _fill(row, total)
        else:
            row = TelemetryHourRow(device_id=k[0], model=k[1], version=k[2], window_start=k[3],
                                   window_end=k[3], latency_edges_ms=list(k[4]),
                                   confidence_edges=list(k[5]))  # fmt: skip
            _fill(row, add)
        s.add(row)


def key_of_hour(r: TelemetryHourRow) -> Key:
    return (r.device_id, r.model, r.version, _utc(r.window_start),
            tuple(r.latency_edges_ms), tuple(r.confidence_edges))  # fmt: skip


def _combine(total: HourSum, more: HourSum) -> None:
    total.windows += more.windows
    total.frames += more.frames
    total.drops += more.drops
    total.detections += more.detections
    total.low_confidence += more.low_confidence
    if more.window_end is not None:
        end = total.window_end
        total.window_end = more.window_end if end is None else max(end, more.window_end)
    total.latency_counts = _add(total.latency_counts, more.latency_counts)
    total.confidence_counts = _add(total.confidence_counts, more.confidence_counts)
    for name, counts in more.per_class.items():
        total.per_class[name] = _add(total.per_class.get(name, []), counts)


def _fill(row: TelemetryHourRow, h: HourSum) -> None:
    row.windows, row.frames, row.drops = h.windows, h.frames, h.drops
    row.detections, row.low_confidence = h.detections, h.low_confidence
    row.window_end = h.window_end or row.window_start
    row.latency_counts = list(h.latency_counts)
    row.confidence_counts = list(h.confidence_counts)
    row.per_class_confidence = {k: list(v) for k, v in h.per_class.items()}


def _add(a: Sequence[int], b: Sequence[int]) -> list[int]:
    # Same edges (they are in the key), so the same length unless a payload was odd:
    # the shorter one is padded rather than the window dropped.
    n = max(len(a), len(b))
    return [(a[i] if i < len(a) else 0) + (b[i] if i < len(b) else 0) for i in range(n)]


def _utc(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


class Retention:
    """Runs :func:`compact` now and every ``config.every`` on its own thread."""

    def __init__(
        self,
        engine: Engine,
        config: RetentionConfig = DEFAULT_RETENTION,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.engine = engine
        self.config = config
        self.clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="retention", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:  # seconds
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def run_once(self) -> int:
        return compact(self.engine, self.clock() - self.config.max_age)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                n = self.run_once()
                if n:
                    log.info("compacted %d telemetry windows into hourly sums", n)
            except Exception:  # logged; the next round tries again
                log.exception("telemetry compaction failed")
            self._stop.wait(self.config.every.total_seconds())
