"""/v1/models/{name}/versions/{version}/stage: an admin moves a version's registry stage.

The move goes through the stage table (``stage_lifecycle.py``: 409 when it does not
apply), is audited, and channels that follow a stage move their devices at once.
"""

from __future__ import annotations

from edgefleet.controller import registry
from edgefleet.controller.api.deps import ActorNameDep, ServicesDep, SessionDep, require
from edgefleet.controller.api.rollouts import deps_of
from edgefleet.controller.model_stages import set_stage
from edgefleet.controller.models.registry import VersionPublic
from edgefleet.controller.rollouts import pinning
from edgefleet.controller.rollouts.context import TICK_LOCK
from fastapi import APIRouter
from sqlmodel import SQLModel

router = APIRouter(prefix="/v1/models", tags=["models"])


class StageSet(SQLModel):
    """Body of PUT .../stage: candidate | staging | production | archived."""

    stage: str


@router.put("/{name}/versions/{version}/stage", response_model=VersionPublic,
            dependencies=[require("admin")])  # fmt: skip
def put_stage(
    name: str,
    version: str,
    *,
    body: StageSet,
    session: SessionDep,
    services: ServicesDep,
    actor: ActorNameDep,
) -> VersionPublic:
    """Move a version to a registry stage by hand (admin); production archives the one before."""
    with TICK_LOCK:  # not between a tick's reads and its writes
        row = set_stage(session, name, version, body.stage, actor)
        session.commit()
    pinning.apply_pins(session, deps_of(services), actor)
    session.refresh(row)
    return registry.public_versions([row])[0]
