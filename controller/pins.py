"""Pins and channels, decided without I/O: what one device should run.

A pin holds the devices whose labels match its selector (the key ``device_id`` matches
the device's id) to one ``model:version``, or to a channel (a name -> version line such as
``stable``). When several pins match, the most specific (most selector keys) wins, then the
newest. An unpinned device is left to the rollouts that assigned it. A rollout never moves a
pinned device off its pin: :func:`excluded` says which devices it must skip.

The shell (``rollouts/pinning.py``) reads the tables, resolves channels to versions, calls
these functions and signs what they answer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

DEVICE_KEY = "device_id"  # a selector key that matches the device's id, not a label


@dataclass(frozen=True)
class Target:
    model: str
    version: str

    def __str__(self) -> str:
        return f"{self.model}:{self.version}"


@dataclass(frozen=True)
class PinRule:
    id: int
    selector: Mapping[str, str]
    target: Target | None = None  # exactly one of target / channel
    channel: str | None = None


@dataclass(frozen=True)
class Claim:
    """A running rollout, as far as one device is concerned."""

    rollout_id: int
    target: Target
    assigned: frozenset[str] = field(default_factory=frozenset)  # devices it has assigned


@dataclass(frozen=True)
class Decision:
    target: Target | None  # None: nothing to change
    source: str  # "pin 3", "pin 3 (channel stable)", "rollout 5", "channel stable unset", ""
    pinned: bool = False  # a pin holds the device (rollouts must not move it off target)


def _matches(selector: Mapping[str, str], device_id: str, labels: Mapping[str, str]) -> bool:
    facts = {**labels, DEVICE_KEY: device_id}
    return all(facts.get(k) == v for k, v in selector.items())


def pin_for(device_id: str, labels: Mapping[str, str], pins: Sequence[PinRule]) -> PinRule | None:
    """The pin that holds this device: most selector keys first, then the newest."""
    found = [p for p in pins if _matches(p.selector, device_id, labels)]
    return max(found, key=lambda p: (len(p.selector), p.id), default=None)


def desired(
    device_id: str,
    labels: Mapping[str, str],
    pins: Sequence[PinRule],
    channels: Mapping[str, Target | None],
    rollouts: Sequence[Claim] = (),
) -> Decision:
    """What the device should run. ``channels`` maps a channel name to the version it
    stands for now (None: it has none yet); ``rollouts`` go highest priority first."""
    pin = pin_for(device_id, labels, pins)
    if pin is not None:
        if pin.target is not None:
            return Decision(pin.target, f"pin {pin.id}", pinned=True)
        target = channels.get(pin.channel or "")
        if target is None:  # held where it is until the channel has a version
            return Decision(None, f"channel {pin.channel} unset", pinned=True)
        return Decision(target, f"pin {pin.id} (channel {pin.channel})", pinned=True)
    for claim in rollouts:
        if device_id in claim.assigned:
            return Decision(claim.target, f"rollout {claim.rollout_id}")
    return Decision(None, "")


def excluded(
    device_id: str,
    labels: Mapping[str, str],
    pins: Sequence[PinRule],
    channels: Mapping[str, Target | None],
    target: Target,
) -> bool:
    """True when a pin holds the device on something other than ``target``."""
    d = desired(device_id, labels, pins, channels)
    return d.pinned and d.target != target
