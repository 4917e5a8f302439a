"""Operator actions on a rollout: pause, resume, abort, rollback, promote, and a new
maintenance window (``set_windows``).

Each moves the rollout through the lifecycle table (``lifecycle.py``; a one-line error
when the table has no such transition from its state), changes the row,
writes an audit entry with who did it, and commits. Rollback goes through the signed
path: the agent refuses a lower release counter for the same model, so the previous
version's bytes are signed again as a new entry with a higher release
(``releases.resign``) and each device's director metadata lists that entry.
"""

from __future__ import annotations

import logging
from datetime import datetime

from edgefleet.controller import model_stages, plans, registry
from edgefleet.controller.models.devices import Device
from edgefleet.controller.models.registry import ModelVersion
from edgefleet.controller.models.rollouts import Rollout, RolloutDevice
from edgefleet.controller.rollouts import releases
from edgefleet.controller.rollouts.context import (
    WAKE,
    Deps,
    audit,
    spec_of,
    stage_row,
    start_stage,
)
from edgefleet.controller.rollouts.lifecycle import (
    TERMINAL,
    RolloutEvent,
    RolloutState,
    TransitionRefusedError,
    transition,
)
from edgefleet.controller.rollouts.spec import MaintenanceWindow
from sqlmodel import Session, select

log = logging.getLogger(__name__)


def _move(rollout: Rollout, event: RolloutEvent) -> None:
    """Apply ``event`` through the lifecycle table, or refuse with a one-line error."""
    rollout.state = transition(rollout.state, event, rollout.id).value


def pause(session: Session, rollout: Rollout, actor: str, now: datetime) -> None:
    _move(rollout, RolloutEvent.PAUSE)
    rollout.reason = f"paused by {actor}"
    _done(session, rollout, actor, "pause")


def resume(session: Session, rollout: Rollout, actor: str, now: datetime) -> None:
    """Continue; a failed or inconclusive stage is judged again on fresh windows."""
    _move(rollout, RolloutEvent.RESUME)
    # A stage that ended (failed, inconclusive, timed out) or was soaking starts over.
    ended = stage_row(session, rollout, rollout.stage).outcome != "pending"
    if ended or rollout.ready_at is not None:
        start_stage(session, rollout, rollout.stage, now)
    rollout.reason = None
    _done(session, rollout, actor, "resume")


def abort(session: Session, deps: Deps, rollout: Rollout, actor: str, now: datetime) -> None:
    """Stop; devices keep what they run. Those assigned that have not switched yet get
    their current version listed again, so they do not install the new one later."""
    _move(rollout, RolloutEvent.ABORT)
    model_stages.rollout_settled(session, rollout, actor, reached_all=False)
    held = _hold_pending(session, deps, rollout)
    rollout.reason = f"aborted by {actor}"
    _done(session, rollout, actor, "abort", held=held)


def _hold_pending(session: Session, deps: Deps, rollout: Rollout) -> list[str]:
    rows = session.exec(select(RolloutDevice).where(RolloutDevice.rollout_id == rollout.id)).all()
    held = []
    for row in rows:
        device = session.get(Device, row.device_id)
        if device is None or device.version == rollout.version or device.version is None:
            continue
        if (device.model, device.version) != (row.previous_model, row.previous_version):
            continue
        # Still on what it ran before: its own release, so no re-signing is needed.
        old = registry.get_version(session, device.model or "", device.version)
        target = plans.target_for(session, deps.signing, old, device)
        director_version = deps.signing.assign(row.device_id, [target])
        device.desired_model, device.desired_version = old.name, old.version
        device.desired_set_by = f"rollout/{rollout.id}:abort"
        device.director_version = director_version
        session.add(device)
        held.append(row.device_id)
        deps.hints.send_hint(row.device_id, director_version)
    return held


def promote(session: Session, rollout: Rollout, actor: str, now: datetime) -> None:
    """Skip the rest of this stage's soak and its gates: the next stage starts now."""
    _move(rollout, RolloutEvent.PROMOTE)
    spec = spec_of(rollout)
    stage = stage_row(session, rollout, rollout.stage)
    stage.ended_at, stage.outcome = now, "promoted"
    session.add(stage)
    if rollout.stage + 1 < len(spec.stages):
        start_stage(session, rollout, rollout.stage + 1, now)
        rollout.reason = f"promoted by {actor}"
    else:
        rollout.reason = f"last stage promoted by {actor}"
        rollout.ready_at = rollout.ready_at or now
    _done(session, rollout, actor, "promote", stage=rollout.stage + 1)


def set_windows(
    session: Session,
    rollout: Rollout,
    windows: list[MaintenanceWindow],
    actor: str,
    now: datetime,
) -> None:
    """Replace the rollout's maintenance windows (none: its devices may install now). The
    state does not change; the scheduler assigns the devices a window opened for on its
    next round, which this wakes."""
    if RolloutState(rollout.state) in TERMINAL:
        raise TransitionRefusedError(
            f"cannot change the window of rollout {rollout.id}: it is {rollout.state}"
        )
    spec = spec_of(rollout)
    before = [w.model_dump(mode="json") for w in spec.maintenance_windows]
    after = [w.model_dump(mode="json") for w in windows]
    rollout.spec = {**spec.model_dump(mode="json"), "maintenance_windows": after}
    _done(session, rollout, actor, "window", before=before, after=after)
    WAKE.set()


def rollback(session: Session, deps: Deps, rollout: Rollout, actor: str, now: datetime) -> None:
    roll_back(session, deps, rollout, actor, now)
    session.commit()


def roll_back(session: Session, deps: Deps, rollout: Rollout, actor: str, now: datetime) -> None:
    """Every device this rollout assigned goes back to what it ran before (no commit)."""
    _move(rollout, RolloutEvent.ROLLBACK)  # refused before anything is signed
    model_stages.rollout_settled(session, rollout, actor, reached_all=False)
    rows = session.exec(select(RolloutDevice).where(RolloutDevice.rollout_id == rollout.id)).all()
    resigned: dict[tuple[str, str], ModelVersion] = {}
    sent: list[tuple[str, int]] = []
    for row in rows:
        prev = (row.previous_model, row.previous_version)
        device = session.get(Device, row.device_id)
        if device is None or prev[0] is None or prev[1] is None:
            continue  # it ran nothing before; nothing to go back to
        if prev not in resigned:
            resigned[prev] = _resign(session, deps, rollout, prev[0], prev[1])
        entry = resigned[prev]
        target = plans.target_for(session, deps.signing, entry, device)
        director_version = deps.signing.assign(row.device_id, [target])
        device.desired_model, device.desired_version = entry.name, entry.version
        device.desired_set_by = f"rollout/{rollout.id}:rollback"
        device.director_version = director_version
        session.add(device)
        sent.append((row.device_id, director_version))
    labels = sorted(f"{v.name}:{v.version}" for v in resigned.values())
    rollout.rollback_version = ", ".join(labels) or None
    rollout.reason = rollout.reason or f"rolled back by {actor}"
    session.add(rollout)
    audit(session, actor, "rollback", f"rollout/{rollout.id}", to=labels, devices=len(sent))
    session.flush()
    log.info("rollout %s rolled back: %d device(s) to %s", rollout.id, len(sent), labels)
    # The director files are written already; an agent that refreshes now finds them.
    for device_id, director_version in sent:
        deps.hints.send_hint(device_id, director_version)


def _resign(
    session: Session, deps: Deps, rollout: Rollout, model: str, version: str
) -> ModelVersion:
    """The old bytes as a new version with a higher release (same model), or the old entry
    itself when the device ran another model (its release counter is not affected)."""
    old = registry.get_version(session, model, version)
    if model != rollout.model:
        return old
    return releases.resign(session, deps.signing, deps.artifact_path, old)


def _done(session: Session, rollout: Rollout, actor: str, action: str, **detail: object) -> None:
    session.add(rollout)
    audit(session, actor, action, f"rollout/{rollout.id}", **detail)
    session.commit()
    log.info("rollout %s: %s by %s", rollout.id, action, actor)
