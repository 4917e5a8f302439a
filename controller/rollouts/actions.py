"""Operator actions on a rollout: pause, resume, abort, rollback, promote.

Each checks the state it may act from (a one-line error otherwise), changes the row,
writes an audit entry with who did it, and commits. Rollback goes through the signed
path: the agent refuses a lower release counter for the same model, so the previous
version's bytes are signed again as a new entry with a higher release (Trust issue:
"a deliberate downgrade is a newly signed entry with a higher counter pointing at the
old bytes") and each device's director metadata lists that entry.
"""

from __future__ import annotations

import logging
from datetime import datetime

from edgefleet.controller import plans, registry
from edgefleet.controller.models import Device, ModelVersion, Rollout, RolloutDevice
from edgefleet.controller.rollouts.service import (
    Deps,
    audit,
    spec_of,
    start_stage,
)
from edgefleet.shared.errors import EdgefleetError
from sqlmodel import Session, select

log = logging.getLogger(__name__)


class ActionRefusedError(EdgefleetError):
    """The action does not apply to the rollout's state (HTTP 409)."""


_FROM = {
    "pause": {"running"},
    "resume": {"paused", "failed"},
    "abort": {"running", "paused", "failed"},
    "rollback": {"running", "paused", "failed", "succeeded", "aborted"},
    "promote": {"running", "paused"},
}


def _check(rollout: Rollout, action: str) -> None:
    if rollout.state not in _FROM[action]:
        allowed = ", ".join(sorted(_FROM[action]))
        raise ActionRefusedError(
            f"cannot {action} rollout {rollout.id}: it is {rollout.state} (needs {allowed})"
        )


def pause(session: Session, rollout: Rollout, actor: str, now: datetime) -> None:
    _check(rollout, "pause")
    rollout.state, rollout.reason = "paused", f"paused by {actor}"
    _done(session, rollout, actor, "pause")


def resume(session: Session, rollout: Rollout, actor: str, now: datetime) -> None:
    """Continue; a failed or inconclusive stage is judged again on fresh windows."""
    _check(rollout, "resume")
    if rollout.state == "failed" or rollout.ready_at is not None:
        start_stage(session, rollout, rollout.stage, now)
    rollout.state, rollout.reason = "running", None
    _done(session, rollout, actor, "resume")


def abort(session: Session, deps: Deps, rollout: Rollout, actor: str, now: datetime) -> None:
    """Stop; devices keep what they run. Those assigned that have not switched yet get
    their current version listed again, so they do not install the new one later."""
    _check(rollout, "abort")
    held = _hold_pending(session, deps, rollout)
    rollout.state, rollout.reason = "aborted", f"aborted by {actor}"
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
        device.director_version = director_version
        session.add(device)
        held.append(row.device_id)
        deps.hints.send_hint(row.device_id, director_version)
    return held


def promote(session: Session, rollout: Rollout, actor: str, now: datetime) -> None:
    """Skip the rest of this stage's soak and its gates: the next stage starts now."""
    _check(rollout, "promote")
    spec = spec_of(rollout)
    from edgefleet.controller.rollouts.service import _stage_row

    stage = _stage_row(session, rollout, rollout.stage)
    stage.ended_at, stage.outcome = now, "promoted"
    session.add(stage)
    if rollout.stage + 1 < len(spec.stages):
        start_stage(session, rollout, rollout.stage + 1, now)
        rollout.state, rollout.reason = "running", f"promoted by {actor}"
    else:
        rollout.state, rollout.reason = "running", f"last stage promoted by {actor}"
        rollout.ready_at = rollout.ready_at or now
    _done(session, rollout, actor, "promote", stage=rollout.stage + 1)


def rollback(session: Session, deps: Deps, rollout: Rollout, actor: str, now: datetime) -> None:
    _check(rollout, "rollback")
    roll_back(session, deps, rollout, actor, now)
    session.commit()


def roll_back(session: Session, deps: Deps, rollout: Rollout, actor: str, now: datetime) -> None:
    """Every device this rollout assigned goes back to what it ran before (no commit)."""
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
        device.director_version = director_version
        session.add(device)
        sent.append((row.device_id, director_version))
    labels = sorted(f"{v.name}:{v.version}" for v in resigned.values())
    rollout.rollback_version = ", ".join(labels) or None
    rollout.state = "rolled_back"
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
    path = deps.artifact_path(old.sha256)
    with registry._PUSH_LOCK:  # the release counter is "max + 1", as in a push
        release = registry._next_release(session, model)
        label = f"{old.version}-rb{release}"[:64]
        info = deps.signing.add_model_target(model, label, release, path, format=old.format)
        session.add(ModelVersion(
            name=model, version=label, release=release, sha256=info.sha256,
            length=info.length, target=info.target_path, format=old.format,
        ))  # fmt: skip
        session.flush()
        new = registry.get_version(session, model, label)
        plans.carry_plans(session, deps.artifact_path, deps.signing, old, new)
    return new


def _done(session: Session, rollout: Rollout, actor: str, action: str, **detail: object) -> None:
    session.add(rollout)
    audit(session, actor, action, f"rollout/{rollout.id}", **detail)
    session.commit()
    log.info("rollout %s: %s by %s", rollout.id, action, actor)
