"""Fleet drift: telemetry windows summed per group (model version, a label such as site or
store, or device) and per time bucket, each sum scored against its version's model card.

Summing histograms before scoring (rather than averaging per-window scores) weighs every
detection the same, so a busy store and a quiet one count for what they saw.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from edgefleet.controller.cards import CardStore
from edgefleet.controller.models.devices import Device
from edgefleet.controller.models.telemetry import TelemetryWindowRow
from edgefleet.shared.card import drift_scores
from edgefleet.shared.errors import ConfigError
from edgefleet.shared.histogram import merge_counts
from sqlmodel import Session, col, select

MAX_WINDOWS = 50_000  # windows read per answer


@dataclass
class Bucket:
    group: str
    model: str | None
    version: str | None
    start: datetime
    windows: int = 0
    frames: int = 0
    detections: int = 0
    low_confidence: int = 0
    counts: list[int] = field(default_factory=list)


def group_key(group_by: str, row: TelemetryWindowRow, labels: dict[str, str]) -> str:
    if group_by in ("model_version", "version"):
        return f"{row.model}:{row.version}"
    if group_by == "device":
        return row.device_id
    name = group_by.removeprefix("label:")
    return labels.get(name, "-")


def _utc(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def _bucket_start(t: datetime, bucket_s: int) -> datetime:
    t = _utc(t)
    if bucket_s <= 0:
        return datetime.fromtimestamp(0, timezone.utc)
    ts = int(t.timestamp()) // bucket_s * bucket_s
    return datetime.fromtimestamp(ts, timezone.utc)


def aggregate(
    rows: Sequence[TelemetryWindowRow], labels: dict[str, dict[str, str]], group_by: str,
    bucket_s: int,
) -> list[Bucket]:  # fmt: skip
    buckets: dict[tuple[str, str | None, str | None, datetime], Bucket] = {}
    for row in rows:
        group = group_key(group_by, row, labels.get(row.device_id, {}))
        start = _bucket_start(row.window_end, bucket_s)
        b = buckets.setdefault((group, row.model, row.version, start),
                               Bucket(group, row.model, row.version, start))  # fmt: skip
        b.windows += 1
        b.frames += row.frames
        b.detections += row.detections
        b.low_confidence += row.low_confidence
        b.counts = merge_counts(b.counts, row.confidence_counts) if b.counts else list(
            row.confidence_counts)  # fmt: skip
    return sorted(buckets.values(), key=lambda b: (b.group, b.start))


def score(b: Bucket, cards: CardStore) -> dict[str, Any]:
    card = cards.find(b.model, b.version)
    scores = drift_scores(card.confidence_counts, b.counts, card.confidence_edges) if card else {}
    return {
        "group": b.group, "model": b.model, "version": b.version, "t": b.start.isoformat(),
        "windows": b.windows, "frames": b.frames, "detections": b.detections,
        "detections_per_frame": b.detections / b.frames if b.frames else 0.0,
        "low_share": b.low_confidence / b.detections if b.detections else 0.0,
        "psi": scores.get("psi"), "js": scores.get("js"),
        "wasserstein": scores.get("wasserstein"), "baseline": card is not None,
    }  # fmt: skip


def drift_report(
    session: Session, cards: CardStore, *, group_by: str = "model_version",
    since: datetime | None = None, bucket_s: int = 60, model: str | None = None,
    now: datetime | None = None,
) -> list[dict[str, Any]]:  # fmt: skip
    if group_by not in ("model_version", "version", "device") and not group_by.strip(":"):
        raise ConfigError(f"bad group_by {group_by!r}")
    now = now or datetime.now(timezone.utc)
    since = since or now - timedelta(hours=1)
    stmt = (
        select(TelemetryWindowRow)
        .where(col(TelemetryWindowRow.window_end) >= since)
        .order_by(col(TelemetryWindowRow.id))
        .limit(MAX_WINDOWS)
    )
    if model:
        stmt = stmt.where(TelemetryWindowRow.model == model)
    rows = session.exec(stmt).all()
    labels = {d.device_id: dict(d.labels) for d in session.exec(select(Device)).all()}
    return [score(b, cards) for b in aggregate(rows, labels, group_by, bucket_s)]
