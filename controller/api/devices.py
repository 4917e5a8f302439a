"""/v1/devices: the fleet as the ingest sees it."""

from __future__ import annotations

from typing import Annotated

from edgefleet.controller.alerts.push import CommandSender
from edgefleet.controller.api.deps import (
    ActorNameDep,
    ServicesDep,
    SessionDep,
    require,
)
from edgefleet.controller.fleet_view import fleet
from edgefleet.controller.models.devices import Device, DevicePublic, DevicesPublic
from edgefleet.controller.models.telemetry import (
    TelemetryWindowPublic,
    TelemetryWindowRow,
    TelemetryWindowsPublic,
)
from edgefleet.controller.rollouts.context import audit
from edgefleet.shared.errors import NotFoundError, TransportError
from edgefleet.shared.protocol import Command
from fastapi import APIRouter, Query
from sqlmodel import col, select

router = APIRouter(prefix="/v1/devices", tags=["devices"])


def _get(session: SessionDep, device_id: str) -> Device:
    device = session.get(Device, device_id)
    if device is None:
        raise NotFoundError(f"unknown device {device_id!r}", device_id=device_id)
    return device


@router.get("", response_model=DevicesPublic)
def list_devices(session: SessionDep, services: ServicesDep) -> DevicesPublic:
    """Each device's reported state beside its desired one, and why they differ."""
    rows = session.exec(select(Device).order_by(col(Device.device_id))).all()
    return DevicesPublic(data=fleet(session, rows, services.clock()), count=len(rows))


@router.get("/{device_id}", response_model=DevicePublic)
def get_device(device_id: str, session: SessionDep, services: ServicesDep) -> DevicePublic:
    return fleet(session, [_get(session, device_id)], services.clock())[0]


@router.get("/{device_id}/telemetry", response_model=TelemetryWindowsPublic)
def device_telemetry(
    device_id: str, session: SessionDep, limit: Annotated[int, Query(ge=1, le=10000)] = 100
) -> TelemetryWindowsPublic:
    """The device's most recent ``limit`` windows, oldest first."""
    _get(session, device_id)
    stmt = (
        select(TelemetryWindowRow)
        .where(TelemetryWindowRow.device_id == device_id)
        .order_by(col(TelemetryWindowRow.window_start).desc())
        .limit(limit)
    )
    rows = list(reversed(session.exec(stmt).all()))
    data = [TelemetryWindowPublic.model_validate(r) for r in rows]
    return TelemetryWindowsPublic(data=data, count=len(data))


@router.post("/{device_id}/refresh", dependencies=[require("operator")])
def refresh_device(
    device_id: str, session: SessionDep, services: ServicesDep, actor: ActorNameDep
) -> dict[str, str]:
    """Tell the device to look at its director now and retry artifacts it refused."""
    _get(session, device_id)
    link = services.link
    sent = isinstance(link, CommandSender) and link.send_command(
        device_id, Command(command="refresh")
    )
    if not sent:
        raise TransportError("the broker is not connected: the device cannot be told now")
    audit(session, actor, "refresh", f"device:{device_id}")
    session.commit()
    return {"device_id": device_id, "command": "refresh"}
