"""The alert loop: new telemetry windows -> a metric against a baseline -> rules -> alerts.

A thread of the controller (serve.py). It reads windows it has not seen yet (by row id),
so the MQTT ingest stays a plain insert. Tracks and alerts are keyed by (rule, scope, model,
version): a device that moves to another version resolves its alerts on the old one at its
first window of the new one; any firing alert whose scope sent nothing for the rule's
``quiet_after_s`` resolves too. Captured baselines and firing alerts survive a restart (the
database); the counts of consecutive looks start again from zero. With several controllers
on one database only the holder of the ``alerts`` lease (rollouts/lease.py) looks.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from edgefleet.controller.alerts.config import AlertConfig
from edgefleet.controller.alerts.notify import WebhookNotifier
from edgefleet.controller.alerts.rules import (
    Aggregator,
    Bucket,
    Look,
    Rule,
    Track,
    Transition,
    enough,
    measure,
    scope_label,
    scope_of,
    step,
)
from edgefleet.controller.cards import CardStore
from edgefleet.controller.db import session_scope
from edgefleet.controller.models.alerts import AlertRow, DriftBaselineRow
from edgefleet.controller.models.devices import Device
from edgefleet.controller.models.telemetry import TelemetryWindowRow
from edgefleet.controller.rollouts import lease
from edgefleet.shared.protocol import utcnow
from sqlalchemy import func, or_
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

log = logging.getLogger(__name__)
BATCH = 500  # windows per look

TrackKey = tuple[int, str, str, str]  # (rule index, scope, model, version)
BaselineKey = tuple[str, str, str, int]  # (scope, model, version, windows wanted)


@dataclass
class Captured:
    """A captured baseline in memory; ``row_id`` is its DriftBaselineRow."""

    look: Look
    edges: list[float]
    size: int
    row_id: int | None = None

    @property
    def complete(self) -> bool:
        return self.look.windows >= self.size


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
        holder: str | None = None,  # this process in the alerts lease
    ) -> None:
        self.engine, self.cards, self.config, self.clock = engine, cards, config, clock
        self.holder = holder or lease.default_holder()
        self.leading = False
        self.push = push
        self.notifier = notifier or WebhookNotifier(
            config.webhooks, timeout_s=config.webhook_timeout_s, attempts=config.webhook_attempts
        )
        self.tracks: dict[TrackKey, Track] = {}
        self.seen: dict[TrackKey, float] = {}  # end of the key's latest window (epoch s)
        self.pending: dict[TrackKey, Look] = {}  # windows / buckets too thin for a look yet
        self.running: dict[tuple[int, str, str], str] = {}  # (rule, scope, model) -> version
        self.baselines: dict[BaselineKey, Captured] = {}
        self.groups = Aggregator()  # site / label / model version scopes
        self.last_id = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="alerts", daemon=True)

    def start(self) -> None:
        self.lead()  # a lone controller resumes before its first window arrives
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        if self.leading:
            lease.release(self.engine, self.holder, lease.ALERTS)

    def lead(self) -> bool:
        """Take or renew the alerts lease; True while held. Replicas on one database would
        each judge every window, and alert and push twice: only the holder looks, and a new
        holder first resumes from the database."""
        ttl = max(lease.LEASE_TTL_S, 3 * self.config.interval_s)
        token = lease.acquire(self.engine, self.holder, self.clock(), ttl, lease.ALERTS)
        if token is not None and not self.leading:
            log.info("alerts: %s holds the alerts lease (epoch %d)", self.holder, token)
            self.resume()
        elif token is None and self.leading:
            log.info("alerts: %s lost the alerts lease", self.holder)
        self.leading = token is not None
        return self.leading

    def resume(self) -> None:
        """Pick up after a restart or a takeover: firing alerts stay firing, captured
        baselines stay; old windows are not re-judged."""
        now = self.clock().timestamp()
        self.tracks, self.seen, self.pending, self.running = {}, {}, {}, {}
        self.baselines, self.groups = {}, Aggregator()
        with Session(self.engine) as s:
            self.last_id = int(s.exec(select(func.max(TelemetryWindowRow.id))).one() or 0)
            for a in s.exec(select(AlertRow).where(AlertRow.state == "firing")).all():
                for i, rule in enumerate(self.config.rules):
                    if _owns(rule, a) and a.model is not None and a.version is not None:
                        key = (i, a.scope, a.model, a.version)
                        self.tracks[key], self.seen[key] = Track(firing=True), now
                        self.running[(i, a.scope, a.model)] = a.version
            for b in s.exec(select(DriftBaselineRow)).all():
                look = Look(b.frames, b.detections, b.empty_frames, list(b.confidence_counts),
                            b.windows)  # fmt: skip
                self.baselines[(b.scope, b.model, b.version, b.size)] = Captured(
                    look, list(b.confidence_edges), b.size, b.id
                )

    def _run(self) -> None:
        while not self._stop.wait(self.config.interval_s):
            try:
                if self.lead():
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

    # -- one window --------------------------------------------------------------------

    def _judge(
        self, s: Session, row: TelemetryWindowRow, known: dict[str, dict[str, str]]
    ) -> list[dict[str, Any]]:
        if row.model is None or row.version is None:
            return []
        out: list[dict[str, Any]] = []
        labels = known.get(row.device_id, {})
        look = Look(row.frames, row.detections, row.empty_frames, list(row.confidence_counts), 1)
        taken: dict[BaselineKey, bool] = {}  # baselines this window already went into
        for i, rule in enumerate(self.config.rules):
            scope = scope_of(rule, row.device_id, labels)
            if scope is None:
                continue
            key = (i, scope, row.model, row.version)
            out += self._version_moved(s, i, key)
            self.seen[key] = row.window_end.timestamp()
            if rule.baseline == "captured":
                bkey = (scope, row.model, row.version, rule.baseline_windows)
                if bkey not in taken:
                    taken[bkey] = self._capture(s, bkey, row, look)
                if taken[bkey]:
                    continue  # a window of the reference is not judged against it
            if rule.scope == "device":
                out += self._summed_look(s, rule, key, look, (row.device_id, labels))
                continue
            index = int(row.window_end.timestamp() // rule.bucket_s)
            bucket = Bucket(index, row.model, row.version, look.copy(), scope_label(rule, labels))
            for gkey, closed in self.groups.add(key, bucket):
                out += self._summed_look(s, rule, gkey, closed.look, (None, closed.labels))
        return out

    def _summed_look(
        self, s: Session, rule: Rule, key: TrackKey, window: Look,
        facts: tuple[str | None, dict[str, str]],
    ) -> list[dict[str, Any]]:  # fmt: skip
        """A device's window, or a group's closed bucket, is a look once it (with the thin
        ones before it) is enough: a scene that loses detections still gets looked at."""
        ref = self._reference(rule, key)
        if ref is None:
            return []
        pending = self.pending.pop(key, None)
        if pending is None:
            pending = window.copy()
        else:
            pending.add(window)
        if not enough(rule, pending, ref[0]):
            self.pending[key] = pending
            return []
        return self._look(s, rule, key, pending, facts)

    def _look(
        self, s: Session, rule: Rule, key: TrackKey, look: Look,
        facts: tuple[str | None, dict[str, str]],
    ) -> list[dict[str, Any]]:  # fmt: skip
        """One look of one rule at one key: measure, step, record a change."""
        ref = self._reference(rule, key)
        if ref is None:
            return []
        value = measure(rule, look, *ref)
        track, what = step(rule, self.tracks.get(key, Track()), value)
        self.tracks[key] = track
        if what is Transition.NONE or value is None:
            return []
        reason = "clear" if what is Transition.RESOLVE else None
        return [self._record(s, rule, key, value, what, facts, reason)]

    def _reference(self, rule: Rule, key: TrackKey) -> tuple[Look, list[float]] | None:
        """The rule's baseline for this key: the card, or the captured windows once complete."""
        _, scope, model, version = key
        if rule.baseline == "captured":
            got = self.baselines.get((scope, model, version, rule.baseline_windows))
            return (got.look, got.edges) if got is not None and got.complete else None
        card = self.cards.find(model, version)
        if card is None:
            return None
        look = Look(card.images, card.detections, None, list(card.confidence_counts), 1)
        return look, list(card.confidence_edges)

    def _capture(self, s: Session, bkey: BaselineKey, row: TelemetryWindowRow, look: Look) -> bool:
        """Add the window to the key's captured baseline while it is not complete (stored
        at once, so a restart goes on from there); True when it went in."""
        got = self.baselines.get(bkey)
        if got is not None and got.complete:
            return False
        if row.frames <= 0:
            return True  # an idle window is no reference, and nothing to judge
        if got is None:
            got = self.baselines[bkey] = Captured(look.copy(), list(row.confidence_edges), bkey[3])
        else:
            got.look.add(look)
        stored = s.get(DriftBaselineRow, got.row_id) if got.row_id is not None else None
        if stored is None:
            scope, model, version, size = bkey
            stored = DriftBaselineRow(scope=scope, model=model, version=version, size=size,
                                      confidence_edges=got.edges)  # fmt: skip
        stored.windows, stored.frames, stored.detections = (
            got.look.windows, got.look.frames, got.look.detections,
        )  # fmt: skip
        stored.empty_frames, stored.confidence_counts = got.look.empty_frames, list(got.look.counts)
        stored.updated_at = self.clock()
        s.add(stored)
        s.flush()
        got.row_id = stored.id
        if got.complete:
            log.info("drift baseline captured: %s %s:%s over %d windows", *bkey[:3], bkey[3])
        return True

    # -- auto-resolve ------------------------------------------------------------------

    def _version_moved(self, s: Session, rule_i: int, key: TrackKey) -> list[dict[str, Any]]:
        """A device scope whose model now runs another version: resolve the old one's alert
        and forget its track. (A group may run two versions at once; its old version
        resolves when it goes quiet.)"""
        rule = self.config.rules[rule_i]
        _, scope, model, version = key
        before = self.running.get((rule_i, scope, model))
        self.running[(rule_i, scope, model)] = version
        if rule.scope != "device" or before is None or before == version:
            return []
        old = (rule_i, scope, model, before)
        self.seen.pop(old, None)
        self.pending.pop(old, None)
        track = self.tracks.pop(old, None)
        return [self._resolve(s, rule, old, "version")] if track and track.firing else []

    def _expire(self, s: Session) -> list[dict[str, Any]]:
        """Judge the group buckets whose span ended a whole bucket ago (the group went
        quiet), then resolve firing alerts whose scope sent nothing for quiet_after_s."""
        now = self.clock().timestamp()
        out = []
        for i, rule in enumerate(self.config.rules):
            if rule.scope != "device":
                before = int(now // rule.bucket_s) - 1
                for gkey, bucket in self.groups.expire(i, before):
                    out += self._summed_look(s, rule, gkey, bucket.look, (None, bucket.labels))
        for key, last in list(self.seen.items()):
            rule = self.config.rules[key[0]]
            if now - last <= rule.quiet_after_s:
                continue
            del self.seen[key]  # forgotten: stale thin windows are not summed with new ones
            self.pending.pop(key, None)
            track = self.tracks.pop(key, None)
            if track is not None and track.firing:
                out.append(self._resolve(s, rule, key, "quiet"))
        return out

    # -- the alert rows ----------------------------------------------------------------

    def _record(  # noqa: PLR0917 - the alert's facts
        self, s: Session, rule: Rule, key: TrackKey, value: float, what: Transition,
        facts: tuple[str | None, dict[str, str]], reason: str | None,
    ) -> dict[str, Any]:  # fmt: skip
        if what is Transition.RESOLVE:
            return self._resolve(s, rule, key, reason or "clear", value)
        _, scope, model, version = key
        device_id, labels = facts
        alert = AlertRow(
            scope=scope, device_id=device_id, model=model, version=version,
            metric=rule.metric, value=value, threshold=rule.fire_above,
            fired_at=self.clock(), labels=labels, baseline=rule.baseline,
        )  # fmt: skip
        s.add(alert)
        s.flush()
        log.warning("drift alert fired: %s %s:%s %s=%.3f against %s", scope, model, version,
                    rule.metric, value, rule.baseline)  # fmt: skip
        return {"event": "alert.fired", "alert": alert_json(alert)}

    def _resolve(
        self, s: Session, rule: Rule, key: TrackKey, reason: str, value: float | None = None
    ) -> dict[str, Any]:
        _, scope, model, version = key
        same_baseline = col(AlertRow.baseline) == rule.baseline
        if rule.baseline == "card":  # rows from before baselines were chosen have none
            same_baseline = or_(same_baseline, col(AlertRow.baseline).is_(None))
        firing = select(AlertRow).where(
            AlertRow.scope == scope, AlertRow.model == model, AlertRow.version == version,
            AlertRow.metric == rule.metric, AlertRow.state == "firing", same_baseline,
        )  # fmt: skip
        alert = s.exec(firing).first() or AlertRow(
            scope=scope, model=model, version=version, metric=rule.metric,
            value=value if value is not None else 0.0, threshold=rule.fire_above,
            fired_at=self.clock(), baseline=rule.baseline,
        )  # fmt: skip
        alert.state, alert.resolved_at, alert.reason = "resolved", self.clock(), reason
        if value is not None:
            alert.value = value
        s.add(alert)
        s.flush()
        log.warning("drift alert resolved (%s): %s %s:%s %s", reason, scope, model, version,
                    rule.metric)  # fmt: skip
        return {"event": "alert.resolved", "alert": alert_json(alert)}


def _owns(rule: Rule, a: AlertRow) -> bool:
    """Whether a stored alert is one this rule raises (after a restart)."""
    if rule.metric != a.metric or rule.baseline != (a.baseline or "card"):
        return False
    if rule.scope == "device":
        return a.scope.startswith("device:")
    if rule.scope == "model_version":
        return a.scope == "fleet"
    if rule.scope == "site":
        return a.scope.startswith("site:")
    return a.scope.startswith(f"label:{rule.scope.removeprefix('label:')}=")


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
        "labels": a.labels, "baseline": a.baseline or "card", "reason": a.reason,
    }  # fmt: skip
