"""Registry stages against the database: the shell around ``stage_lifecycle.py``.

A version's stage lives on its row (``model_version.stage``); a re-signed copy
(``v1-rb9``, ``rollouts/releases.py``) is its source version and has no stage of its own.
Every move goes through :func:`move`, which archives the model's previous production
version when another one becomes production and writes an audit entry. The rollouts call
:func:`rollout_started` and :func:`rollout_settled`; an admin calls :func:`set_stage`.
Nothing here commits: the caller's transaction carries the move with whatever caused it.
"""

from __future__ import annotations

import logging

from edgefleet.controller.models.audit import AuditEntry
from edgefleet.controller.models.registry import ModelVersion
from edgefleet.controller.models.rollouts import Rollout
from edgefleet.controller.registry import get_version, source_label
from edgefleet.controller.rollouts.lifecycle import RolloutState
from edgefleet.controller.rollouts.releases import source_of
from edgefleet.controller.rollouts.spec import RolloutSpec
from edgefleet.controller.stage_lifecycle import (
    BY_HAND,
    ModelStage,
    StageEvent,
    applies,
    parse_stage,
    transition,
)
from edgefleet.shared.protocol import utcnow
from sqlmodel import Session, col, select

log = logging.getLogger(__name__)

# A rollout in one of these still has its version in staging (failed waits for a person).
ACTIVE = (RolloutState.RUNNING.value, RolloutState.PAUSED.value, RolloutState.FAILED.value)


def production_version(session: Session, model_name: str) -> ModelVersion | None:
    """The model's version in production (at most one), or None."""
    return newest_in(session, model_name, ModelStage.PRODUCTION)


def newest_in(session: Session, model_name: str, stage: ModelStage) -> ModelVersion | None:
    """The model's highest-release version in ``stage``, or None (never a re-signed copy:
    its own row keeps the default stage; it is its source)."""
    stmt = (
        select(ModelVersion)
        .where(ModelVersion.name == model_name, ModelVersion.stage == stage.value)
        .order_by(col(ModelVersion.release).desc())
    )
    for row in session.exec(stmt).all():
        if source_of(session, row) is row:
            return row
    return None


def move(session: Session, row: ModelVersion, event: StageEvent, by: str, actor: str) -> None:
    """Apply ``event`` to ``row`` through the table (a one-line error when it does not
    apply); a new production version archives the one before. A move to the same stage
    changes nothing and is not audited."""
    label = f"{row.name}:{row.version}"
    before = ModelStage(row.stage)
    after = transition(before, event, label)
    if after is before:  # e.g. a rollout of the production version: it keeps its provenance
        return
    if after is ModelStage.PRODUCTION and before is not ModelStage.PRODUCTION:
        previous = production_version(session, row.name)
        if previous is not None and previous.id != row.id:
            move(session, previous, StageEvent.REPLACED, by, actor)
    row.stage, row.stage_by, row.stage_at = after.value, by, utcnow()
    session.add(row)
    session.flush()
    detail = {"from": before.value, "to": after.value, "event": event.value, "by": by}
    session.add(AuditEntry(actor=actor, action="stage", target=label, detail=detail))
    log.info("%s: %s -> %s (%s, %s)", label, before.value, after.value, event.value, by)


def set_stage(session: Session, model: str, version: str, stage: str, actor: str) -> ModelVersion:
    """An admin's move of ``model:version`` (a copy moves its source) to ``stage``."""
    row = source_of(session, get_version(session, model, version))
    move(session, row, BY_HAND[parse_stage(stage)], f"admin:{actor}", actor)
    return row


def _rollout_version(session: Session, rollout: Rollout) -> ModelVersion | None:
    stmt = select(ModelVersion).where(
        ModelVersion.name == rollout.model,
        ModelVersion.version == source_label(rollout.version),
    )
    row: ModelVersion | None = session.exec(stmt).first()
    return row


def rollout_started(session: Session, rollout: Rollout, actor: str) -> None:
    row = _rollout_version(session, rollout)
    if row is not None:
        move(session, row, StageEvent.ROLLOUT_START, f"rollout/{rollout.id}", actor)


def reaches_all(spec: RolloutSpec) -> bool:
    """The rollout's last stage covers every device it selects."""
    return spec.stages[-1].percent == 100


def rollout_settled(session: Session, rollout: Rollout, actor: str, *, reached_all: bool) -> None:
    """After a rollout ended (succeeded, nothing to do, aborted, rolled back): production
    when it reached 100 %; the version it had made production goes back to archived and
    the one it replaced comes back on a rollback; else candidate again once no other
    rollout of the version is active."""
    row = _rollout_version(session, rollout)
    if row is None:
        return
    by = f"rollout/{rollout.id}"
    if reached_all:
        move(session, row, StageEvent.REACHED_ALL, by, actor)
    elif rollout.state == RolloutState.ROLLED_BACK.value and _made_production(row, by):
        _restore(session, row, by, actor)
    elif row.stage == ModelStage.STAGING.value and not _other_active(session, rollout):
        move(session, row, StageEvent.ROLLOUT_END, by, actor)


def _made_production(row: ModelVersion, by: str) -> bool:
    return row.stage == ModelStage.PRODUCTION.value and row.stage_by == by


def _restore(session: Session, row: ModelVersion, by: str, actor: str) -> None:
    """The version the rollout replaced (archived ``by`` it) comes back to production."""
    replaced = session.exec(
        select(ModelVersion).where(
            ModelVersion.name == row.name,
            ModelVersion.stage == ModelStage.ARCHIVED.value,
            ModelVersion.stage_by == by,
        )
    ).first()
    rolled_back = f"{by}:rollback"
    if replaced is not None and applies(replaced.stage, StageEvent.RESTORED):
        move(session, replaced, StageEvent.RESTORED, rolled_back, actor)  # archives ``row``
    if row.stage == ModelStage.PRODUCTION.value:
        move(session, row, StageEvent.ROLLED_BACK, rolled_back, actor)


def _other_active(session: Session, rollout: Rollout) -> bool:
    stmt = select(Rollout.id, Rollout.version).where(
        Rollout.model == rollout.model,
        Rollout.id != rollout.id,
        col(Rollout.state).in_(ACTIVE),
    )
    mine = source_label(rollout.version)
    return any(source_label(v) == mine for _, v in session.exec(stmt).all())
