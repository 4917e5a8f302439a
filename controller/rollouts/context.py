"""What a rollout's tick (service.py), its operator actions (actions.py) and the pins
(pinning.py) share: the lock they sign under, what they may touch besides the database,
the audit trail, and a rollout's spec and stage rows."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from edgefleet.controller.models.audit import AuditEntry
from edgefleet.controller.models.rollouts import Rollout, RolloutStage
from edgefleet.controller.rollouts.spec import RolloutSpec
from edgefleet.controller.trust import Signing
from edgefleet.shared.card import ModelCard
from sqlmodel import Session

# One tick at a time in this process (the API's first tick and the scheduler's loop).
TICK_LOCK = threading.RLock()
# Set when a rollout has devices left to sign: the scheduler runs its next round at once.
WAKE = threading.Event()


class HintSender(Protocol):
    def send_hint(self, device_id: str, director_version: int) -> None: ...


class CardLookup(Protocol):
    def find(self, name: str | None, version: str | None) -> ModelCard | None: ...


@dataclass(frozen=True)
class Deps:
    """What a tick may touch besides the database."""

    signing: Signing
    hints: HintSender
    artifact_path: Callable[[str], Path]  # sha256 -> stored bytes (ArtifactStore.local_copy)
    cards: CardLookup | None = None  # model cards: the drift gates' baseline (CardStore)


def audit(session: Session, actor: str, action: str, target: str, **detail: object) -> None:
    session.add(AuditEntry(actor=actor, action=action, target=target, detail=dict(detail)))


def spec_of(rollout: Rollout) -> RolloutSpec:
    if rollout.spec:
        return RolloutSpec.model_validate(rollout.spec)
    # Rows written before specs existed: the skeleton's single 100 % stage.
    return RolloutSpec(model=rollout.model, version=rollout.version, selector=rollout.selector)


def stage_row(session: Session, rollout: Rollout, index: int) -> RolloutStage:
    row = session.get(RolloutStage, (rollout.id, index))
    if row is None:
        row = RolloutStage(rollout_id=rollout.id or 0, index=index)
    return row


def start_stage(session: Session, rollout: Rollout, index: int, now: datetime) -> None:
    """Start (or, after a resume, restart on fresh windows) stage ``index`` at ``now``."""
    rollout.stage, rollout.stage_started_at, rollout.ready_at = index, now, None
    row = stage_row(session, rollout, index)
    row.started_at, row.ended_at, row.outcome, row.gates = now, None, "pending", []
    session.add(row)
    session.add(rollout)
