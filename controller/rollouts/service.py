"""Rollouts against the database and the signing repositories: the shell around the pure
parts (``advance.plan``, ``gates.evaluate``, ``cohorts``).

``create_rollout`` records a spec and runs its first tick; ``advance`` is one tick of one
rollout (the scheduler calls it for every running rollout) and the only place the
scheduler changes a state, through the lifecycle table (``lifecycle.py``);
``rollout_public`` is what the API shows, and it only reads.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from edgefleet.controller import model_stages, plans
from edgefleet.controller import pins as pinlib
from edgefleet.controller.models.base import as_utc as _utc
from edgefleet.controller.models.devices import Device
from edgefleet.controller.models.registry import ModelVersion
from edgefleet.controller.models.rollouts import (
    Rollout,
    RolloutDevice,
    RolloutDevicePublic,
    RolloutPublic,
    RolloutStage,
    SkippedDevicePublic,
    StagePublic,
)
from edgefleet.controller.models.telemetry import EventRow, TelemetryWindowRow
from edgefleet.controller.pins import Target
from edgefleet.controller.registry import get_version
from edgefleet.controller.rollouts import advance as adv
from edgefleet.controller.rollouts import pinning, releases
from edgefleet.controller.rollouts.actions import roll_back
from edgefleet.controller.rollouts.cohorts import control_group
from edgefleet.controller.rollouts.context import (
    TICK_LOCK,
    WAKE,
    CardLookup,
    Deps,
    audit,
    spec_of,
    stage_row,
    start_stage,
)
from edgefleet.controller.rollouts.gates import (
    Aggregate,
    GateResult,
    Installs,
    card_pair,
    evaluate,
)
from edgefleet.controller.rollouts.lifecycle import RolloutEvent, RolloutState, transition
from edgefleet.controller.rollouts.planner import (
    DeviceReport,
    device_progress,
    matches,
    rollout_progress,
)
from edgefleet.controller.rollouts.spec import RolloutSpec
from edgefleet.controller.rollouts.windows import next_open
from edgefleet.controller.signing.targets import TargetInfo
from edgefleet.shared.errors import EdgefleetError, NotFoundError
from edgefleet.shared.protocol import utcnow
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

log = logging.getLogger(__name__)

SCHEDULER = "scheduler"  # the actor of what the scheduler does by itself
SIGN_BATCH = 250  # devices signed per lock hold and committed per transaction
FIRST_BATCH = 25  # devices the create request signs itself; the scheduler does the rest
TICK_BUDGET_S = 2.0  # seconds of signing per tick, so operator actions get the lock soon


def create_rollout(
    session: Session,
    deps: Deps,
    spec: RolloutSpec,
    actor: str = "unknown",
    now: datetime | None = None,
) -> Rollout:
    """Record the rollout and run its first tick at once (stage 1 is assigned now)."""
    get_version(session, spec.model, spec.version)  # 404 before anything is written
    _require_a_matching_device(session, spec)
    now = now or utcnow()
    rollout = Rollout(
        model=spec.model,
        version=spec.version,
        selector=dict(spec.selector),
        spec=spec.model_dump(mode="json"),
        priority=spec.priority,
        created_at=now,
        stage_started_at=now,
    )
    session.add(rollout)
    session.flush()
    assert rollout.id is not None
    session.add(RolloutStage(rollout_id=rollout.id, index=0, started_at=now))
    audit(session, actor, "create", f"rollout/{rollout.id}", model=spec.model,
          version=spec.version, stages=[str(s) for s in spec.stages])  # fmt: skip
    model_stages.rollout_started(session, rollout, actor)
    session.commit()
    # Sign a first small batch here (the canary, or a small fleet entirely); the scheduler
    # signs the rest in batches (`rollout status` shows them arrive), woken at once.
    advance(session, deps, rollout, now, max_assign=FIRST_BATCH)
    WAKE.set()
    session.refresh(rollout)
    return rollout


class NoMatchingDeviceError(EdgefleetError):
    """A rollout whose selector matches no registered device (HTTP 400)."""


def _require_a_matching_device(session: Session, spec: RolloutSpec) -> None:
    """A rollout to nobody would "succeed" at once and tell the operator nothing."""
    labels = session.exec(select(Device.labels)).all()
    if any(matches(spec.selector, lab or {}) for lab in labels):
        return
    if not labels:
        raise NoMatchingDeviceError("no device is registered yet: a rollout needs one to go to")
    selector = ",".join(f"{k}={v}" for k, v in sorted(spec.selector.items()))
    raise NoMatchingDeviceError(
        f"selector {selector} matches none of the {len(labels)} registered devices"
    )


def get_rollout(session: Session, rollout_id: int) -> Rollout:
    rollout = session.get(Rollout, rollout_id)
    if rollout is None:
        raise NotFoundError(f"unknown rollout {rollout_id}")
    return rollout


# --- one tick ----------------------------------------------------------------------------


def advance(
    session: Session,
    deps: Deps,
    rollout: Rollout,
    now: datetime,
    *,
    max_assign: int | None = None,
    budget_s: float | None = None,
) -> adv.Plan | None:
    """Read, decide (pure), write. Returns the plan, or None when the rollout is not running.

    The plan's assignments are signed in batches of ``SIGN_BATCH``, each committed (and
    hinted) on its own, for at most ``budget_s`` seconds or ``max_assign`` devices; the
    rest stay unassigned, so the next tick's plan (the same decision) lists them again.
    ``WAKE`` is set when some are left.
    """
    with TICK_LOCK:
        # Other replicas: the row stays locked until this tick commits (PostgreSQL; SQLite
        # has one writer anyway), so the leader's tick and another replica's first tick of
        # a new rollout, or an operator's pause, do not decide on the same state twice.
        session.refresh(rollout, with_for_update=True)
        if rollout.state != RolloutState.RUNNING.value:
            return None
        read_at = time.monotonic()
        spec = spec_of(rollout)
        devices = _device_views(session)
        rows = _assigned(session, rollout)
        versions = _versions(session, rollout)
        refusals = _refusals(session, rows, devices, rollout.model, versions)
        members = _members(rollout, spec, devices, rows, pinning.load(session),
                           versions=versions, refusals=refusals)  # fmt: skip
        results = _gate_results(session, rollout, spec, devices, members, versions=versions,
                                cards=deps.cards)  # fmt: skip
        snap = adv.Snapshot(
            rollout.id or 0, spec, rollout.stage, _utc(rollout.ready_at), members, results,
            stage_started_at=_utc(rollout.stage_started_at),
        )  # fmt: skip
        plan = adv.plan(snap, now)
        sign_at = time.monotonic()
        chosen = plan.assign if max_assign is None else plan.assign[:max_assign]
        deadline = time.monotonic() + (TICK_BUDGET_S if budget_s is None else budget_s)
        signed = 0
        last: list[tuple[str, int]] = []  # (device, director version) of the last batch
        for start in range(0, len(chosen), SIGN_BATCH):
            if start and time.monotonic() > deadline:
                break
            if last:  # the previous batch shows in `rollout status` and gets its hints now
                session.commit()
                _hint(deps, last)
            batch = chosen[start : start + SIGN_BATCH]
            last = _assign(session, deps, rollout=rollout, chosen=batch, now=now)
            signed = start + len(batch)
        wanted = len(plan.assign)
        if signed < wanted:
            # Part of the stage is signed: stay, and decide again once the rest is.
            plan = adv.Plan(assign=plan.assign[:signed], ready_at=plan.ready_at,
                            wanted=plan.wanted)  # fmt: skip
            WAKE.set()
        _record(session, deps, rollout=rollout, spec=spec, plan=plan, results=results, now=now)
        session.commit()
        _hint(deps, last)
        if signed:
            log.info("rollout %s: %d of %d device(s) signed this tick (%d assigned before; "
                     "read and decide %.2f s, sign and commit %.2f s)", rollout.id, signed,
                     wanted, len(rows), sign_at - read_at, time.monotonic() - sign_at)  # fmt: skip
        return plan


def _hint(deps: Deps, sent: list[tuple[str, int]]) -> None:
    for device_id, director_version in sent:
        deps.hints.send_hint(device_id, director_version)


# What a tick reads of every device: plain rows, not ORM objects (10,000 devices a second).
_VIEW = tuple(col(c) for c in (
    Device.device_id, Device.labels, Device.model, Device.version, Device.phase,
    Device.desired_model, Device.desired_version, Device.failed_model, Device.failed_version,
))  # fmt: skip


def _device_views(session: Session) -> dict[str, Any]:
    return {r.device_id: r for r in session.execute(sa_select(*_VIEW)).all()}


def _assigned(session: Session, rollout: Rollout) -> dict[str, datetime | None]:
    """The rollout's devices and when each was assigned."""
    rows = session.exec(
        select(RolloutDevice.device_id, RolloutDevice.assigned_at).where(
            RolloutDevice.rollout_id == rollout.id
        )
    ).all()
    return {device_id: _utc(at) for device_id, at in rows}


def _versions(session: Session, rollout: Rollout) -> frozenset[str]:
    """The rollout's version and its re-signed copies: a device may run any of them."""
    row = session.exec(
        select(ModelVersion).where(
            ModelVersion.name == rollout.model, ModelVersion.version == rollout.version
        )
    ).first()
    if row is None:
        return frozenset({rollout.version})
    return frozenset(v.version for v in releases.aliases(session, row)) | {rollout.version}


def _refusals(
    session: Session,
    assigned: dict[str, datetime | None],
    devices: dict[str, Any],
    model: str,
    versions: frozenset[str],
) -> dict[str, str]:
    """Why each assigned device that does not run the version yet refused something since
    its assignment (the agent's ``rejected`` events); the newest one when several."""
    waiting = [
        d for d in assigned
        if d in devices and not (devices[d].model == model and devices[d].version in versions)
    ]  # fmt: skip
    if not waiting:
        return {}
    rows = []
    for start in range(0, len(waiting), _IDS_PER_QUERY):  # bound parameters per statement
        rows += session.exec(
            select(EventRow.device_id, EventRow.reason, EventRow.at).where(
                col(EventRow.device_id).in_(waiting[start : start + _IDS_PER_QUERY]),
                EventRow.kind == "rejected",
            )
        ).all()
    rows.sort(key=lambda r: _utc(r[2]) or datetime.min.replace(tzinfo=timezone.utc))
    out = {}
    for device_id, reason, at in rows:
        since = assigned.get(device_id)
        if since is not None and (_utc(at) or since) < since:
            continue  # refused something before this assignment
        if reason and not reason.startswith(_NOT_ABOUT_ASSIGNMENTS):
            out[device_id] = reason
    return out


# Refusals that say nothing about an assignment: a malformed MQTT message.
_NOT_ABOUT_ASSIGNMENTS = "message on "
_IDS_PER_QUERY = 900  # device ids per IN (...): SQLite and PostgreSQL limit bound parameters


def _members(
    rollout: Rollout,
    spec: RolloutSpec,
    devices: dict[str, Any],
    rows: dict[str, datetime | None],
    rules: pinning.Rules,
    *,
    versions: frozenset[str],
    refusals: dict[str, str],
) -> dict[str, adv.Member]:
    out = {}
    target = Target(rollout.model, rollout.version)
    for device_id, d in devices.items():
        assigned = device_id in rows
        if not assigned and (not matches(spec.selector, d.labels) or rules.excluded(d, target)):
            continue  # not selected, or a pin holds it on another version
        p = device_progress(rollout.model, versions, _report(d), refusals.get(device_id))
        out[device_id] = adv.Member(
            d.labels, assigned, p.done, assigned and p.failed, rows.get(device_id)
        )
    return out


def _gate_results(
    session: Session,
    rollout: Rollout,
    spec: RolloutSpec,
    devices: dict[str, Any],
    members: dict[str, adv.Member],
    *,
    versions: frozenset[str],
    cards: CardLookup | None = None,
) -> list[GateResult]:
    canaries = [d for d, m in members.items() if m.assigned]
    in_rollout = set(canaries)
    since = _utc(rollout.stage_started_at) or _utc(rollout.created_at)
    installs = Installs(
        assigned=len(canaries),
        committed=sum(members[d].done for d in canaries),
        failed=sum(members[d].failed for d in canaries),
        fallbacks=_fallbacks(session, in_rollout, since),
    )
    if not spec.gates and not (installs.failed or installs.fallbacks):
        return []  # nothing to judge: the fleet's windows are not read
    labels = {d: m.labels for d, m in members.items()}
    control = control_group(labels, canaries, spec.control_labels)
    in_control = set(control)
    windows = _windows(session, [*canaries, *control], since)
    canary_agg = Aggregate.of(
        w for w in windows if w.device_id in in_rollout and w.version in versions
    )
    control_agg = Aggregate.of(
        w for w in windows if w.device_id in in_control and w.version not in versions
    )
    if not control_agg.windows:
        # No control left (the last stage covers every device): compare with what the
        # same devices reported on the old version since the rollout began.
        history = _windows(session, list(members), _utc(rollout.created_at))
        control_agg = Aggregate.of(w for w in history if w.version not in versions)
    baseline = _baseline(cards, rollout, canary_agg)
    running = [(devices[d].model, devices[d].version) for d in members]
    pair = card_pair(cards.find if cards else None, rollout.model, rollout.version, running)
    return evaluate(
        spec.gates, canary_agg, control_agg, installs, baseline,
        alpha=spec.false_alarm_rate, cards=pair,
        strata={d: repr([labels[d].get(k) for k in spec.control_labels]) for d in labels},
    )  # fmt: skip


def _baseline(cards: CardLookup | None, rollout: Rollout, canary: Aggregate) -> list[int] | None:
    """The version's model card confidence histogram, when it has one on the same bins
    (PSI / JS gates then compare canaries with it instead of the control group)."""
    card = cards.find(rollout.model, rollout.version) if cards else None
    if card is None or sum(card.confidence_counts) <= 0:
        return None
    if canary.confidence_edges and list(card.confidence_edges) != canary.confidence_edges:
        log.warning("model card of %s:%s has other confidence bins; drift gates use the "
                    "control group", rollout.model, rollout.version)  # fmt: skip
        return None
    return list(card.confidence_counts)


def _windows(
    session: Session, device_ids: list[str], since: datetime | None
) -> list[TelemetryWindowRow]:
    """The devices' windows that started at ``since`` or later (all when None)."""
    rows: list[TelemetryWindowRow] = []
    for start in range(0, len(device_ids), _IDS_PER_QUERY):
        stmt = select(TelemetryWindowRow).where(
            col(TelemetryWindowRow.device_id).in_(device_ids[start : start + _IDS_PER_QUERY])
        )
        if since is not None:
            stmt = stmt.where(col(TelemetryWindowRow.window_start) >= since)
        rows += session.exec(stmt).all()
    return sorted(rows, key=lambda r: r.id or 0)  # as reported, whatever the chunks


def _fallbacks(session: Session, device_ids: set[str], since: datetime | None) -> int:
    """Fallbacks to the previous model that ``device_ids`` reported in windows since
    ``since``, whatever version each window is attributed to. Only windows with one are
    read, so a tick does not read the fleet's telemetry to learn that there were none."""
    stmt = select(TelemetryWindowRow.device_id, TelemetryWindowRow.fallbacks).where(
        col(TelemetryWindowRow.fallbacks) > 0  # the partial index ix_telemetry_window_fallback
    )
    if since is not None:
        stmt = stmt.where(col(TelemetryWindowRow.window_start) >= since)
    rows = session.exec(stmt).all()
    return sum(int(n or 0) for device_id, n in rows if device_id in device_ids)


def _assign(
    session: Session,
    deps: Deps,
    *,
    rollout: Rollout,
    chosen: list[str],
    now: datetime,
) -> list[tuple[str, int]]:
    if not chosen:
        return []
    version = get_version(session, rollout.model, rollout.version)
    loaded = session.exec(select(Device).where(col(Device.device_id).in_(chosen))).all()
    devices = {d.device_id: d for d in loaded}  # the batch's rows, to write
    installed = releases.installed_releases(session, rollout.model, chosen)
    targets, entries = {}, {}
    # The choice depends on the entry (a re-signed copy for a device that installed a
    # higher release) and the fingerprint only.
    chosen_target: dict[tuple[str, str], TargetInfo] = {}
    for device_id in chosen:
        device = devices[device_id]
        entry = releases.entry_for(
            session, deps.signing, deps.artifact_path, version, installed.get(device_id)
        )
        key = (entry.version, repr(sorted((device.fingerprint or {}).items())))
        if key not in chosen_target:
            chosen_target[key] = plans.target_for(session, deps.signing, entry, device)
        targets[device_id], entries[device_id] = [chosen_target[key]], entry
    spec = spec_of(rollout)
    if spec.shadow is not None and spec.shadow.in_stage(rollout.stage + 1):
        shadow = spec.shadow.wire()  # the agent shadows this stage's install
        targets = {d: [dataclasses.replace(t, shadow=shadow) for t in ts]
                   for d, ts in targets.items()}  # fmt: skip
    versions = deps.signing.assign_many(targets)  # one lock hold, two flushes for the batch
    sent = []
    for device_id in chosen:
        device = devices[device_id]
        director_version = versions[device_id]
        session.add(RolloutDevice(
            rollout_id=rollout.id or 0, device_id=device_id, director_version=director_version,
            stage=rollout.stage, previous_model=device.model, previous_version=device.version,
            assigned_at=now,
        ))  # fmt: skip
        device.desired_model, device.desired_version = rollout.model, entries[device_id].version
        device.desired_set_by = f"rollout/{rollout.id}"
        device.director_version = director_version
        device.failed_model = device.failed_version = None  # a fresh attempt
        session.add(device)
        sent.append((device_id, director_version))
    shown = ", ".join(chosen[:10]) + (f" and {len(chosen) - 10} more" if len(chosen) > 10 else "")
    resigned = sorted({e.version for e in entries.values()} - {version.version})
    log.info("rollout %s stage %d: %s:%s to %s%s", rollout.id, rollout.stage + 1, rollout.model,
             rollout.version, shown,
             f" (re-signed as {', '.join(resigned)})" if resigned else "")  # fmt: skip
    return sent


def _record(
    session: Session,
    deps: Deps,
    *,
    rollout: Rollout,
    spec: RolloutSpec,
    plan: adv.Plan,
    results: list[GateResult],
    now: datetime,
) -> None:
    stage = stage_row(session, rollout, rollout.stage)
    stage.gates = [r.to_dict() for r in results]
    stage.started_at = stage.started_at or rollout.stage_started_at
    rollout.ready_at = plan.ready_at
    target = f"rollout/{rollout.id}"
    if plan.next is not adv.Next.STAY:
        stage.ended_at = now
        stage.outcome = "skipped" if plan.next is adv.Next.NOTHING_TO_DO else plan.outcome.value
        rollout.reason = plan.reason
        audit(session, SCHEDULER, plan.next.value, target, stage=rollout.stage + 1,
              reason=plan.reason, gates=stage.gates)  # fmt: skip
        log.info("rollout %s: %s", rollout.id, plan.reason)
    session.add(stage)
    event = _EVENTS.get(plan.next)
    if event is not None:
        rollout.state = transition(rollout.state, event, rollout.id).value
    if event in (RolloutEvent.SUCCEED, RolloutEvent.NOTHING_TO_DO):
        reached = event is RolloutEvent.SUCCEED and model_stages.reaches_all(spec)
        model_stages.rollout_settled(session, rollout, SCHEDULER, reached_all=reached)
        if reached:  # channels that follow production move on the next round, at once
            WAKE.set()
    if plan.next is adv.Next.NEXT_STAGE:
        start_stage(session, rollout, rollout.stage + 1, now)
    elif plan.next is adv.Next.FAIL and spec.on_failure == "rollback":
        roll_back(session, deps, rollout, SCHEDULER, now)
    session.add(rollout)


# What the scheduler's decisions are in the lifecycle table (STAY changes nothing).
_EVENTS = {
    adv.Next.NEXT_STAGE: RolloutEvent.NEXT_STAGE,
    adv.Next.SUCCEED: RolloutEvent.SUCCEED,
    adv.Next.NOTHING_TO_DO: RolloutEvent.NOTHING_TO_DO,
    adv.Next.FAIL: RolloutEvent.FAIL,
    adv.Next.PAUSE: RolloutEvent.INCONCLUSIVE,
}


# --- what the API shows ------------------------------------------------------------------


def rollout_public(
    session: Session, rollout: Rollout, now: datetime | None = None
) -> RolloutPublic:
    """The rollout as recorded, with its devices' progress; writes nothing."""
    spec = spec_of(rollout)
    stmt = (
        select(Device, RolloutDevice)
        .join(RolloutDevice, col(RolloutDevice.device_id) == col(Device.device_id))
        .where(RolloutDevice.rollout_id == rollout.id)
        .order_by(col(Device.device_id))
    )
    pairs = session.exec(stmt).all()
    versions = _versions(session, rollout)
    assigned = {row.device_id: _utc(row.assigned_at) for _, row in pairs}
    views = {d.device_id: d for d, _ in pairs}
    refusals = _refusals(session, assigned, views, rollout.model, versions)
    reports = [_report(d) for d, _ in pairs]
    progress = rollout_progress(rollout.model, versions, reports, refusals)
    all_devices = session.exec(select(Device)).all()
    matching = sum(1 for d in all_devices if matches(spec.selector, d.labels))
    skipped, held = _skipped_and_held(session, rollout, spec, all_devices, set(assigned))
    devices = [
        RolloutDevicePublic(
            device_id=p.report.device_id, stage=row.stage, stage_number=row.stage + 1,
            online=d.online,
            phase=p.report.phase, model=p.report.model, version=p.report.version,
            done=p.done, failed=p.failed, refused=p.refused,
        )
        for p, (d, row) in zip(progress.devices, pairs, strict=True)
    ]  # fmt: skip
    return RolloutPublic(
        id=rollout.id or 0, model=rollout.model, version=rollout.version,
        selector=rollout.selector, state=rollout.state, created_at=rollout.created_at,
        devices=devices, total=progress.total, done=progress.done, failed=progress.failed,
        stage=rollout.stage, stage_number=rollout.stage + 1,
        stages=_stages(session, rollout, spec, matching),
        reason=rollout.reason, priority=rollout.priority, matching=matching,
        rollback_version=rollout.rollback_version, spec=spec.model_dump(mode="json"),
        skipped=skipped,
        waiting_for_window=_window_wait(rollout, spec, views, held, now or utcnow()),
    )  # fmt: skip


def _skipped_and_held(
    session: Session,
    rollout: Rollout,
    spec: RolloutSpec,
    devices: Sequence[Device],
    assigned: set[str],
) -> tuple[list[SkippedDevicePublic], list[Device]]:
    """Matching devices a pin holds on another version (skipped, with the pin), and the
    unassigned rest (those a closed maintenance window may hold)."""
    rules = pinning.load(session)
    target = Target(rollout.model, rollout.version)
    skipped, rest = [], []
    for d in devices:
        if d.device_id in assigned or not matches(spec.selector, d.labels):
            continue
        if rules.excluded(d, target):
            why = pinlib.desired(d.device_id, d.labels, rules.pins, rules.channels)
            to = f"to {why.target}" if why.target else "where it is"
            skipped.append(SkippedDevicePublic(device_id=d.device_id,
                                               reason=f"{why.source} holds it {to}"))  # fmt: skip
        else:
            rest.append(d)
    return skipped, rest


def _window_wait(
    rollout: Rollout,
    spec: RolloutSpec,
    assigned: Mapping[str, Device],
    held: Sequence[Device],
    now: datetime,
) -> datetime | None:
    """When the first maintenance window opens for a device this running rollout's current
    stage would assign now but may not (the scheduler's choice, ``adv.stage_devices``);
    None when no window holds one."""
    if rollout.state != RolloutState.RUNNING.value or not spec.maintenance_windows:
        return None
    members = {d.device_id: d.labels for d in [*assigned.values(), *held]}
    wanted = set(adv.stage_devices(rollout.id or 0, spec, rollout.stage, members))
    opens = [
        at for d in held
        if d.device_id in wanted
        and (at := next_open(spec.maintenance_windows, d.labels, now)) is not None and at > now
    ]  # fmt: skip
    return min(opens, default=None)


def _stages(
    session: Session, rollout: Rollout, spec: RolloutSpec, matching: int
) -> list[StagePublic]:
    rows = {
        s.index: s
        for s in session.exec(
            select(RolloutStage).where(RolloutStage.rollout_id == rollout.id)
        ).all()
    }
    counts = spec.stage_counts(matching)
    out = []
    for i, stage in enumerate(spec.stages):
        row = rows.get(i)
        out.append(StagePublic(
            index=i, number=i + 1, stage=str(stage), devices=counts[i],
            started_at=row.started_at if row else None, ended_at=row.ended_at if row else None,
            outcome=row.outcome if row else "pending", gates=row.gates if row else [],
        ))  # fmt: skip
    return out


def _report(d: Device) -> DeviceReport:
    return DeviceReport(
        device_id=d.device_id,
        model=d.model,
        version=d.version,
        phase=d.phase,
        desired_model=d.desired_model,
        desired_version=d.desired_version,
        failed_model=d.failed_model,
        failed_version=d.failed_version,
    )
