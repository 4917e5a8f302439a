"""Pins and channels against the database and the director: the shell around ``pins.py``.

:func:`apply_pins` signs every pinned device's target into its director metadata when
it differs from what the device is meant to run. The API calls it when a pin or a channel
changes, the scheduler every round (a device seen for the first time, a channel that
tracks a model's newest version or a registry stage).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from edgefleet.controller import model_stages, plans
from edgefleet.controller import pins as pinlib
from edgefleet.controller.models.devices import Device
from edgefleet.controller.models.pins import Channel, Pin
from edgefleet.controller.models.registry import ModelVersion
from edgefleet.controller.models.rollouts import Rollout, RolloutDevice
from edgefleet.controller.registry import get_version, source_label
from edgefleet.controller.rollouts import releases
from edgefleet.controller.rollouts.context import TICK_LOCK, Deps, audit
from edgefleet.controller.rollouts.lifecycle import RolloutState
from edgefleet.controller.stage_lifecycle import ModelStage
from edgefleet.shared.errors import EdgefleetError
from sqlmodel import Session, col, or_, select

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rules:
    pins: list[pinlib.PinRule]
    channels: dict[str, pinlib.Target | None]

    def excluded(self, device: Device, target: pinlib.Target) -> bool:
        labels = dict(device.labels)
        return pinlib.excluded(device.device_id, labels, self.pins, self.channels, target)


def rule_of(pin: Pin) -> pinlib.PinRule:
    target = pinlib.Target(pin.model, pin.version) if pin.model and pin.version else None
    return pinlib.PinRule(pin.id or 0, dict(pin.selector), target, pin.channel)


def newest(session: Session, model: str) -> str | None:
    """The model's newest version the validation gate did not reject (a channel without a
    version follows it)."""
    accepted = or_(
        col(ModelVersion.gate_status).is_(None), col(ModelVersion.gate_status) != "rejected"
    )
    stmt = (
        select(ModelVersion)
        .where(ModelVersion.name == model, accepted)
        .order_by(col(ModelVersion.release).desc())
        .limit(1)
    )
    row = session.exec(stmt).first()
    return row.version if row else None


def resolve(session: Session, channel: Channel) -> pinlib.Target | None:
    """The version the channel stands for now: its own, its stage's, or the newest."""
    if channel.stage:
        row = model_stages.newest_in(session, channel.model, ModelStage(channel.stage))
        version = row.version if row else None
    else:
        version = channel.version or newest(session, channel.model)
    return pinlib.Target(channel.model, version) if version else None


def load(session: Session) -> Rules:
    pins = [rule_of(p) for p in session.exec(select(Pin).order_by(col(Pin.id))).all()]
    channels = {c.name: resolve(session, c) for c in session.exec(select(Channel)).all()}
    return Rules(pins, channels)


def held(session: Session, rules: Rules, pin_id: int) -> list[str]:
    """Devices the pin ``pin_id`` holds now (it is the one that wins for them)."""
    devices = session.exec(select(Device).order_by(col(Device.device_id))).all()
    return [
        d.device_id
        for d in devices
        if (p := pinlib.pin_for(d.device_id, d.labels, rules.pins)) is not None and p.id == pin_id
    ]


def apply_pins(session: Session, deps: Deps, actor: str) -> list[str]:
    """Sign each pinned device's target where it is not what the device is meant to run;
    commits, sends the hints, returns the device ids moved."""
    with TICK_LOCK:  # the scheduler's ticks and the API's changes sign one at a time
        sent = _apply(session, deps, actor)
    for device_id, version in sent:
        deps.hints.send_hint(device_id, version)
    if sent:
        log.info("pins moved %s", ", ".join(d for d, _ in sent))
    return [d for d, _ in sent]


def _apply(session: Session, deps: Deps, actor: str) -> list[tuple[str, int]]:
    rules = load(session)
    if not rules.pins:
        return []
    sent: list[tuple[str, int]] = []
    for device in session.exec(select(Device).order_by(col(Device.device_id))).all():
        d = pinlib.desired(device.device_id, device.labels, rules.pins, rules.channels)
        t = d.target
        if t is None or _meant(device, t):
            continue
        try:
            entry = _entry(session, deps, device, t)
            info = plans.target_for(session, deps.signing, entry, device)
            version = deps.signing.assign(device.device_id, [info])
        except EdgefleetError as e:  # a pin on a version not pushed (yet): nothing to sign
            log.warning("pin for %s: cannot assign %s: %s", device.device_id, t, e.reason)
            continue
        _leave_rollouts(session, device.device_id, t)
        device.desired_model, device.desired_version = t.model, entry.version
        device.desired_set_by = pin_label(device, rules)
        device.director_version, device.failed_model, device.failed_version = version, None, None
        session.add(device)
        audit(session, actor, "pin", f"device/{device.device_id}", to=str(t), by=d.source,
              signed=entry.version)  # fmt: skip
        sent.append((device.device_id, version))
    session.commit()
    return sent


def pin_label(device: Device, rules: Rules) -> str | None:
    """``pin/3`` or ``pin/3:stable``: the pin that holds the device (None: none)."""
    pin = pinlib.pin_for(device.device_id, device.labels, rules.pins)
    if pin is None:
        return None
    return f"pin/{pin.id}" + (f":{pin.channel}" if pin.channel else "")


def _meant(device: Device, t: pinlib.Target) -> bool:
    """The device is already meant to run ``t``: the version itself or a re-signed copy."""
    if device.desired_model != t.model or device.desired_version is None:
        return False
    return source_label(device.desired_version) == source_label(t.version)


def _entry(session: Session, deps: Deps, device: Device, t: pinlib.Target) -> ModelVersion:
    """What the device is given of ``t``: a copy re-signed under a higher release when it
    installed a higher one (the agent refuses a lower release), as rollouts do."""
    version = get_version(session, t.model, t.version)
    installed = releases.installed_releases(session, t.model, [device.device_id])
    return releases.entry_for(
        session, deps.signing, deps.artifact_path, version, installed.get(device.device_id)
    )


def _leave_rollouts(session: Session, device_id: str, target: pinlib.Target) -> None:
    """A pinned device no longer counts in running rollouts of another version."""
    stmt = (
        select(RolloutDevice, Rollout)
        .join(Rollout, col(Rollout.id) == col(RolloutDevice.rollout_id))
        .where(RolloutDevice.device_id == device_id)
        .where(col(Rollout.state).in_((RolloutState.RUNNING.value, RolloutState.PAUSED.value)))
    )
    for row, rollout in session.exec(stmt).all():
        if pinlib.Target(rollout.model, rollout.version) != target:
            session.delete(row)
