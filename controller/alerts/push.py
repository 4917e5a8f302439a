"""A fired drift alert, pushed to the devices it covers: their samplers treat the scene as
changed (``drift`` command on ``commands``), so frames of the changed scene come home
even from a device whose own windows have not crossed its threshold yet.

Best effort and never raising: an unreachable broker or a controller run without MQTT
costs one log line; the devices' own drift scores still open their drift budget.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol, runtime_checkable

from edgefleet.controller.models.devices import Device
from edgefleet.shared.protocol import Command
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

log = logging.getLogger(__name__)
HOLD_S = 900.0  # seconds a pushed alert keeps a device's sampler in its drift budget


@runtime_checkable
class CommandSender(Protocol):
    def send_command(self, device_id: str, command: Command) -> bool: ...


def scope_devices(session: Session, alert: dict[str, Any]) -> list[str]:
    """The devices an alert covers: its device, or every device of the group (its labels)
    that runs the alert's model version."""
    if alert.get("device_id"):
        return [str(alert["device_id"])]
    if not alert.get("model") or not alert.get("version"):
        return []
    want = dict(alert.get("labels") or {})
    rows = session.exec(
        select(Device.device_id, Device.labels).where(
            col(Device.model) == alert["model"], col(Device.version) == alert["version"]
        )
    ).all()
    return sorted(d for d, labels in rows if all(labels.get(k) == v for k, v in want.items()))


class DriftPush:
    def __init__(self, engine: Engine, link: object, hold_s: float = HOLD_S) -> None:
        self.engine, self.link, self.hold_s = engine, link, hold_s

    def __call__(self, change: dict[str, Any]) -> int:
        """Push one alert change; returns how many devices were told."""
        if change.get("event") != "alert.fired" or not isinstance(self.link, CommandSender):
            return 0
        with Session(self.engine) as s:
            devices = scope_devices(s, change["alert"])
        command = Command(command="drift", hold_s=self.hold_s)
        sent = sum(bool(self.link.send_command(d, command)) for d in devices)
        if sent < len(devices):
            log.info("drift alert pushed to %d of %d device(s): broker away", sent, len(devices))
        return sent
