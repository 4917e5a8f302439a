"""Announcements: tell devices over MQTT that something they fetch over HTTP changed.

An idle device asks for its sampling settings and the card of the model it runs only when
told (and on a long safety interval, agent/refresh_schedule.py): a changed sampling rule
sends ``settings`` to every device its selector matches (a superset of those whose
settings changed: the others' ask is a bodiless 304), and a stored model card sends
``card`` to every device that runs its version. Like every MQTT message, an announcement
carries no trust; the device fetches over HTTP as always.

Sent to offline devices too: their persistent session keeps it (QoS 1), and an agent asks
for its settings on every reconnect anyway. Best effort and never raising: with the broker
away the devices still get the change, on their safety interval.
"""

from __future__ import annotations

import logging

from edgefleet.controller.alerts.push import CommandSender
from edgefleet.controller.models.devices import Device
from edgefleet.controller.sampling import matches
from edgefleet.shared.protocol import Command
from sqlmodel import Session, col, select

log = logging.getLogger(__name__)


def settings_audience(session: Session, selector: dict[str, str]) -> list[str]:
    """The devices a rule for ``selector`` may apply to (labels as the controller knows them)."""
    rows = session.exec(select(Device.device_id, Device.labels)).all()
    return sorted(d for d, labels in rows if matches(selector, labels or {}))


def card_audience(session: Session, model: str, version: str) -> list[str]:
    """The devices that run ``model`` ``version``: the ones that may be missing its card."""
    stmt = select(Device.device_id).where(
        col(Device.model) == model, col(Device.version) == version
    )
    return sorted(session.exec(stmt).all())


def announce(link: object, devices: list[str], command: Command) -> int:
    """Send ``command`` to each device; returns how many were handed to the broker."""
    if not devices:
        return 0
    if not isinstance(link, CommandSender):
        log.info("no MQTT link: %s not announced to %d device(s)", command.command, len(devices))
        return 0
    sent = sum(bool(link.send_command(d, command)) for d in devices)
    if sent < len(devices):
        log.info("%s announced to %d of %d device(s): broker away; the rest ask on their "
                 "safety interval", command.command, sent, len(devices))  # fmt: skip
    return sent
