"""/v1/rollouts: staged rollouts (the spec in ``rollouts/spec.py``) and operator actions.

Who acts (the audit log's actor) is the API token's name when the controller runs with
``--auth``, else the ``X-Edgefleet-Actor`` header (the CLI sends the OS user).
"""

from __future__ import annotations

from typing import Literal

from edgefleet.controller.api.deps import (
    ActorNameDep,
    CallerDep,
    ServicesDep,
    SessionDep,
)
from edgefleet.controller.models.rollouts import Rollout, RolloutPublic, RolloutsPublic
from edgefleet.controller.rollouts import actions, service
from edgefleet.controller.rollouts.context import TICK_LOCK, Deps
from edgefleet.controller.rollouts.spec import MAX_WINDOWS, MaintenanceWindow, RolloutSpec
from edgefleet.controller.services import Services
from edgefleet.controller.validation_registry import check_rollout
from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import col, select

router = APIRouter(prefix="/v1/rollouts", tags=["rollouts"])

Action = Literal["pause", "resume", "abort", "rollback", "promote"]


def deps_of(services: Services) -> Deps:
    from edgefleet.controller.cards import CardStore

    cards = CardStore(services.settings.data_dir / "cards")
    return Deps(services.signing, services.link, services.store.local_copy, cards)


@router.post("", response_model=RolloutPublic)
def create_rollout(
    body: RolloutSpec,
    session: SessionDep,
    services: ServicesDep,
    caller: CallerDep,
    override_gate: bool = False,
) -> RolloutPublic:
    """Start a rollout; a version the validation gate rejected is refused (409) unless
    ``override_gate`` by an admin, which the audit log records (``gate-override``)."""
    actor = caller.name
    check_rollout(session, body.model, body.version, override=override_gate, role=caller.role,
                  actor=actor)  # fmt: skip
    rollout = service.create_rollout(session, deps_of(services), body, actor, now=services.clock())
    return service.rollout_public(session, rollout, services.clock())


@router.get("", response_model=RolloutsPublic)
def list_rollouts(session: SessionDep, services: ServicesDep) -> RolloutsPublic:
    rows = session.exec(select(Rollout).order_by(col(Rollout.id))).all()
    data = [service.rollout_public(session, r, services.clock()) for r in rows]
    return RolloutsPublic(data=data, count=len(data))


@router.get("/{rollout_id}", response_model=RolloutPublic)
def get_rollout(rollout_id: int, session: SessionDep, services: ServicesDep) -> RolloutPublic:
    rollout = service.get_rollout(session, rollout_id)
    return service.rollout_public(session, rollout, services.clock())


class WindowsBody(BaseModel):
    """The rollout's new maintenance windows; an empty list lets its devices install now."""

    model_config = ConfigDict(extra="forbid")
    maintenance_windows: list[MaintenanceWindow] = Field(max_length=MAX_WINDOWS)


@router.put("/{rollout_id}/windows", response_model=RolloutPublic)
def set_windows(
    rollout_id: int,
    body: WindowsBody,
    session: SessionDep,
    services: ServicesDep,
    actor: ActorNameDep,
) -> RolloutPublic:
    """Replace a rollout's maintenance windows (recorded in the audit log as ``window``)."""
    with TICK_LOCK:
        rollout = service.get_rollout(session, rollout_id)
        now = services.clock()
        actions.set_windows(session, rollout, body.maintenance_windows, actor, now)
        session.refresh(rollout)
        return service.rollout_public(session, rollout, now)


@router.post("/{rollout_id}/{action}", response_model=RolloutPublic)
def act(
    rollout_id: int,
    action: Action,
    session: SessionDep,
    services: ServicesDep,
    actor: ActorNameDep,
) -> RolloutPublic:
    """pause | resume | abort | rollback | promote, recorded in the audit log."""
    with TICK_LOCK:
        rollout = service.get_rollout(session, rollout_id)
        now = services.clock()
        if action in ("rollback", "abort"):
            getattr(actions, action)(session, deps_of(services), rollout, actor, now)
        else:
            getattr(actions, action)(session, rollout, actor, now)
        session.refresh(rollout)
        return service.rollout_public(session, rollout, now)
