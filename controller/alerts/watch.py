"""The alert loop: new telemetry windows -> drift against the model card -> rules -> alerts.

A thread of the controller (serve.py). It reads windows it has not seen yet (by row id),
so the MQTT ingest stays a plain insert. Firing alerts survive a restart (the database);
the counts of consecutive windows start again from zero.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

from edgefleet.controller.alerts.config import AlertConfig
from edgefleet.controller.alerts.notify import WebhookNotifier
from edgefleet.controller.alerts.rules import (
    Aggregator,
    Bucket,
    Rule,
    Track,
    Transition,
    group_scope,
    step,
)
from edgefleet.controller.cards import CardStore
from edgefleet.controller.db import session_scope
from edgefleet.controller.models import AlertRow, Device, TelemetryWindowRow
from edgefleet.shared.card import drift_scores
from edgefleet.shared.protocol import utcnow
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

log = logging.getLogger(__name__)
BATCH = 500  # windows per look


class AlertWatcher:
    def __init__(
        self,
        engine: Engine,
        cards: CardStore,
        config: AlertConfig,
        notifier: WebhookNotifier | None = None,
        clock: Callable[[], datetime] = utcnow,
        *,
        push: Callable[[dict[str, Any]], Any] | None = None,  # to the devices (alerts/push.py)
    ) -> None:
        self.engine, self.cards, self.config, self.clock = engine, cards, config, clock
        self.push = push
        self.notifier = notifier or WebhookNotifier(
            config.webhooks, timeout_s=config.webhook_timeout_s, attempts=config.webhook_attempts
        )
        self.tracks: dict[tuple[str, str], Track] = {}
        self.groups = Aggregator()  # site / label / model version scopes
        self.last_id = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="alerts", daemon=True)

    def start(self) -> None:
        self.resume()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def resume(self) -> None:
        """Pick up after a restart: firing alerts stay firing; old windows are not re-judged."""
        with Session(self.engine) as s:
            self.last_id = int(s.exec(select(func.max(TelemetryWindowRow.id))).one() or 0)
            for a in s.exec(select(AlertRow).where(AlertRow.state == "firing")).all():
                self.tracks[(a.scope, a.metric)] = Track(firing=True)

    def _run(self) -> None:
        while not self._stop.wait(self.config.interval_s):
            try:
                self.poll()
            except Exception:  # the next look retries; one bad round must not end alerting
                log.exception("alert evaluation failed")

    def poll(self) -> int:
        """Judge every window that arrived since the last look; returns how many."""
        with session_scope(self.engine) as s:
            rows = s.exec(
                select(TelemetryWindowRow)
                .where(col(TelemetryWindowRow.id) > self.last_id)
                .order_by(col(TelemetryWindowRow.id))
                .limit(BATCH)
            ).all()
            labels = _labels_of(s, {row.device_id for row in rows})  # one query per look
            changes = [c for row in rows for c in self._judge(s, row, labels)]
            if rows:
                self.last_id = int(rows[-1].id or self.last_id)
            changes += self._expire(s)
        for change in changes:
            self.notifier.send(change)
            if self.push is not None:
                self.push(change)
        return len(rows)

    def _judge(
        self, s: Session, row: TelemetryWindowRow, known: dict[str, dict[str, str]]
    ) -> list[dict[str, Any]]:
        out = []
        card = self.cards.find(row.model, row.version)
        scores = (
            drift_scores(card.confidence_counts, row.confidence_counts, card.confidence_edges)
            if card is not None
            else {}
        )
        labels = known.get(row.device_id, {})
        for i, rule in enumerate(self.config.rules):
            if rule.scope != "device":
                scope = group_scope(rule, labels, row.model, row.version)
                if scope is None or row.model is None or row.version is None:
                    continue
                index = int(row.window_end.timestamp() // rule.bucket_s)
                label = "site" if rule.scope == "site" else rule.scope.removeprefix("label:")
                window = Bucket(index, row.model, row.version, list(row.confidence_counts),
                                row.detections, 1,
                                {label: labels[label]} if label in labels else {})  # fmt: skip
                for closed, bucket in self.groups.add(i, scope, window):
                    out += self._judge_bucket(s, rule, closed, bucket)
                continue
            if card is None:
                continue
            key = (f"device:{row.device_id}", rule.metric)
            track, what = step(rule, self.tracks.get(key, Track()), scores.get(rule.metric),
                               row.detections)  # fmt: skip
            self.tracks[key] = track
            if what is not Transition.NONE:
                facts = (row.device_id, row.model, row.version, labels)
                out.append(self._record(s, key[0], rule, scores[rule.metric], what, facts))
        return out

    def _expire(self, s: Session) -> list[dict[str, Any]]:
        """Judge the group buckets whose span ended a whole bucket ago: the fleet went quiet."""
        now = self.clock().timestamp()
        out = []
        for i, rule in enumerate(self.config.rules):
            if rule.scope != "device":
                before = int(now // rule.bucket_s) - 1
                for scope, bucket in self.groups.expire(i, before):
                    out += self._judge_bucket(s, rule, scope, bucket)
        return out

    def _judge_bucket(
        self, s: Session, rule: Rule, scope: str, bucket: Bucket
    ) -> list[dict[str, Any]]:
        card = self.cards.find(bucket.model, bucket.version)
        if card is None:
            return []
        scores = drift_scores(card.confidence_counts, bucket.counts, card.confidence_edges)
        key = (scope, rule.metric)
        track, what = step(rule, self.tracks.get(key, Track()), scores.get(rule.metric),
                           bucket.detections)  # fmt: skip
        self.tracks[key] = track
        if what is Transition.NONE:
            return []
        facts = (None, bucket.model, bucket.version, dict(bucket.labels))
        return [self._record(s, scope, rule, scores[rule.metric], what, facts)]

    def _record(  # noqa: PLR0917 - the alert's facts
        self,
        s: Session,
        scope: str,
        rule: Rule,
        value: float,
        what: Transition,
        facts: tuple[str | None, str | None, str | None, dict[str, str]],
    ) -> dict[str, Any]:
        device_id, model, version, labels = facts
        if what is Transition.FIRE:
            alert = AlertRow(
                scope=scope, device_id=device_id, model=model, version=version,
                metric=rule.metric, value=value, threshold=rule.fire_above,
                fired_at=self.clock(), labels=labels,
            )  # fmt: skip
        else:
            firing = select(AlertRow).where(
                AlertRow.scope == scope, AlertRow.metric == rule.metric, AlertRow.state == "firing"
            )
            found = s.exec(firing).first()
            alert = found or AlertRow(
                scope=scope, metric=rule.metric, value=value, threshold=rule.fire_above,
                fired_at=self.clock(),
            )  # fmt: skip
            alert.state, alert.resolved_at, alert.value = "resolved", self.clock(), value
        s.add(alert)
        s.flush()
        done = "fired" if what is Transition.FIRE else "resolved"
        log.warning("drift alert %s: %s %s=%.3f", done, scope, rule.metric, value)
        return {"event": f"alert.{done}", "alert": alert_json(alert)}


def _labels_of(s: Session, device_ids: set[str]) -> dict[str, dict[str, str]]:
    """Each device's labels, read in one query (not one lookup per window)."""
    if not device_ids:
        return {}
    rows = s.exec(
        select(Device.device_id, Device.labels).where(col(Device.device_id).in_(device_ids))
    ).all()
    return {device_id: dict(labels or {}) for device_id, labels in rows}


def alert_json(a: AlertRow) -> dict[str, Any]:
    def iso(t: datetime | None) -> str | None:
        return t.isoformat() if t else None

    return {
        "id": a.id, "scope": a.scope, "device_id": a.device_id, "model": a.model,
        "version": a.version, "metric": a.metric, "value": a.value, "threshold": a.threshold,
        "state": a.state, "fired_at": iso(a.fired_at), "resolved_at": iso(a.resolved_at),
        "labels": a.labels,
    }  # fmt: skip
