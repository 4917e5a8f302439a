"""/v1/pins and /v1/channels: hold devices on a version, or make them follow a channel.

Every change is applied at once (``rollouts/pinning.apply_pins``: the pinned devices'
director metadata is re-signed) and goes into the audit log with who made it.
"""

from __future__ import annotations

from edgefleet.controller.api.deps import ActorNameDep, ServicesDep, SessionDep
from edgefleet.controller.api.rollouts import deps_of
from edgefleet.controller.models.pins import (
    Channel,
    ChannelPublic,
    ChannelsPublic,
    Pin,
    PinCreate,
    PinPublic,
    PinsPublic,
)
from edgefleet.controller.registry import check_label, get_version
from edgefleet.controller.rollouts import pinning
from edgefleet.controller.rollouts.context import audit
from edgefleet.controller.stage_lifecycle import parse_stage
from edgefleet.controller.validation_registry import refuse_rejected
from edgefleet.shared.errors import ConfigError, NotFoundError
from edgefleet.shared.protocol import utcnow
from fastapi import APIRouter
from sqlmodel import Session, SQLModel, col, select

router = APIRouter(prefix="/v1", tags=["pins"])


class ChannelSet(SQLModel):
    """Body of PUT /v1/channels/{name}: a ``version``, or a registry ``stage`` to follow
    (production, ...); neither: the model's newest version."""

    model: str
    version: str | None = None
    stage: str | None = None


def _pin_public(session: Session, pin: Pin, rules: pinning.Rules) -> PinPublic:
    return PinPublic.model_validate(
        pin, update={"devices": pinning.held(session, rules, pin.id or 0)}
    )


def _check_pin(session: Session, body: PinCreate) -> None:
    if bool(body.channel) == bool(body.model):
        raise ConfigError("a pin names either model and version, or a channel")
    if body.model:
        if not body.version:
            raise ConfigError("a pin on a model needs a version (or pin to a channel)")
        get_version(session, body.model, body.version)  # 404 for a version never pushed
        refuse_rejected(session, body.model, body.version)
    elif session.get(Channel, body.channel) is None:
        raise NotFoundError(f"unknown channel {body.channel!r}")


@router.get("/pins", response_model=PinsPublic)
def list_pins(session: SessionDep) -> PinsPublic:
    rules = pinning.load(session)
    rows = session.exec(select(Pin).order_by(col(Pin.id))).all()
    data = [_pin_public(session, p, rules) for p in rows]
    return PinsPublic(data=data, count=len(data))


@router.post("/pins", response_model=PinPublic)
def create_pin(
    body: PinCreate, session: SessionDep, services: ServicesDep, actor: ActorNameDep
) -> PinPublic:
    _check_pin(session, body)
    pin = Pin(selector=body.selector, model=body.model, version=body.version,
              channel=body.channel, created_by=actor)  # fmt: skip
    session.add(pin)
    session.flush()
    audit(session, actor, "pin_create", f"pin/{pin.id}", selector=body.selector,
          to=body.channel or f"{body.model}:{body.version}")  # fmt: skip
    session.commit()
    pinning.apply_pins(session, deps_of(services), actor)
    session.refresh(pin)
    return _pin_public(session, pin, pinning.load(session))


@router.delete("/pins/{pin_id}", response_model=PinPublic)
def delete_pin(pin_id: int, session: SessionDep, actor: ActorNameDep) -> PinPublic:
    """Devices keep what they run; rollouts may move them again."""
    pin = session.get(Pin, pin_id)
    if pin is None:
        raise NotFoundError(f"unknown pin {pin_id}")
    public = _pin_public(session, pin, pinning.load(session))
    session.delete(pin)
    audit(session, actor, "pin_delete", f"pin/{pin_id}", devices=public.devices)
    session.commit()
    return public


def _channel_public(session: Session, c: Channel) -> ChannelPublic:
    target = pinning.resolve(session, c)
    return ChannelPublic.model_validate(c, update={"resolved": str(target) if target else None})


@router.get("/channels", response_model=ChannelsPublic)
def list_channels(session: SessionDep) -> ChannelsPublic:
    rows = session.exec(select(Channel).order_by(col(Channel.name))).all()
    data = [_channel_public(session, c) for c in rows]
    return ChannelsPublic(data=data, count=len(data))


@router.put("/channels/{name}", response_model=ChannelPublic)
def set_channel(
    name: str, body: ChannelSet, session: SessionDep, services: ServicesDep, actor: ActorNameDep
) -> ChannelPublic:
    """Point a channel at ``model:version``, a registry stage or the model's newest; its
    devices follow, now and whenever what it stands for changes."""
    check_label("channel", name)
    stage = _check_channel(session, body)
    row = session.get(Channel, name) or Channel(name=name, model=body.model)
    row.model, row.version, row.stage, row.updated_at = body.model, body.version, stage, utcnow()
    session.add(row)
    audit(session, actor, "channel_set", f"channel/{name}", model=body.model,
          version=body.version, stage=stage)  # fmt: skip
    session.commit()
    pinning.apply_pins(session, deps_of(services), actor)
    session.refresh(row)
    return _channel_public(session, row)


def _check_channel(session: Session, body: ChannelSet) -> str | None:
    """The stage the channel follows (None: a version or the newest), checked."""
    if body.version and body.stage:
        raise ConfigError("a channel follows either a version or a stage, not both")
    if body.version:
        get_version(session, body.model, body.version)
        refuse_rejected(session, body.model, body.version)
    return parse_stage(body.stage).value if body.stage else None


@router.delete("/channels/{name}", response_model=ChannelPublic)
def delete_channel(name: str, session: SessionDep, actor: ActorNameDep) -> ChannelPublic:
    """Refused while a pin follows it (the error names those pins)."""
    row = session.get(Channel, name)
    if row is None:
        raise NotFoundError(f"unknown channel {name!r}")
    users = session.exec(select(Pin).where(Pin.channel == name)).all()
    if users:
        ids = ", ".join(str(p.id) for p in users)
        raise ConfigError(f"channel {name!r} is followed by pin(s) {ids}; delete them first")
    public = _channel_public(session, row)
    session.delete(row)
    audit(session, actor, "channel_delete", f"channel/{name}")
    session.commit()
    return public
