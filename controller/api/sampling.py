"""/v1/sampling: sampler settings per device group; a device asks for its own.

A device's answer carries an ``ETag`` (a hash of the answer); a device that sends it back
in ``If-None-Match`` gets a bodiless 304 while its settings are unchanged. A rule set or
deleted is announced (``settings`` on ``commands``) to the devices its selector matches,
so they ask at once and otherwise only on a long safety interval (controller/announce.py).
"""

from __future__ import annotations

from typing import Annotated, Any

from edgefleet.controller import sampling
from edgefleet.controller.announce import announce, settings_audience
from edgefleet.controller.api.conditional import etag_of, not_modified
from edgefleet.controller.api.deps import ServicesDep, SessionDep
from edgefleet.controller.models.samples import SamplingRule
from edgefleet.controller.services import Services
from edgefleet.shared.protocol import Command
from edgefleet.shared.topics import validate_device_id
from fastapi import APIRouter, Header, Query, Response
from pydantic import BaseModel, Field
from sqlmodel import Session

router = APIRouter(prefix="/v1", tags=["sampling"])
device_router = APIRouter(prefix="/v1", tags=["sampling"])  # a device reads its own settings


class RuleIn(BaseModel):
    selector: dict[str, str] = Field(default_factory=dict)  # {} matches every device
    settings: dict[str, Any]  # the agent's `sampling:` mapping


class RuleOut(BaseModel):
    id: int
    selector: dict[str, str]
    settings: dict[str, Any]


class RulesOut(BaseModel):
    data: list[RuleOut]
    count: int


class DeviceSampling(BaseModel):
    device_id: str
    labels: dict[str, str]
    rule_id: int | None  # None: no rule matches; the device keeps its local config
    selector: dict[str, str] | None
    sampling: dict[str, Any] | None


def _out(row: SamplingRule) -> RuleOut:
    return RuleOut(id=row.id or 0, selector=row.selector, settings=row.settings)


@router.get("/sampling", response_model=RulesOut)
def list_rules(session: SessionDep) -> RulesOut:
    rows = [_out(r) for r in sampling.list_rules(session)]
    return RulesOut(data=rows, count=len(rows))


@router.put("/sampling", response_model=RuleOut)
def set_rule(body: RuleIn, session: SessionDep, services: ServicesDep) -> RuleOut:
    out = _out(sampling.set_rule(session, body.selector, body.settings))
    _announce(session, services, body.selector)
    return out


@router.delete("/sampling")
def delete_rule(session: SessionDep, services: ServicesDep, selector: str = "") -> dict[str, str]:
    parsed = sampling.parse_selector(selector)
    sampling.delete_rule(session, parsed)
    _announce(session, services, parsed)
    return {"deleted": selector}


def _announce(session: Session, services: Services, selector: dict[str, str]) -> None:
    devices = settings_audience(session, selector)
    session.close()  # the pooled connection goes back before the broker is talked to
    announce(services.link, devices, Command(command="settings"))


@device_router.get("/devices/{device_id}/sampling", response_model=DeviceSampling)
def device_sampling(
    device_id: str,
    session: SessionDep,
    response: Response,
    label: Annotated[list[str] | None, Query(max_length=16)] = None,
    if_none_match: Annotated[str | None, Header()] = None,
) -> DeviceSampling | Response:
    """The device's effective settings: the first rule whose selector its labels match."""
    validate_device_id(device_id)
    reported = sampling.parse_selector(",".join(label or []))
    rule, labels = sampling.effective(session, device_id, reported)
    answer = DeviceSampling(
        device_id=device_id,
        labels=labels,
        rule_id=rule.id if rule else None,
        selector=rule.selector if rule else None,
        sampling=rule.settings if rule else None,
    )
    etag = etag_of(answer.model_dump(mode="json"))
    if not_modified(if_none_match, etag):
        return Response(status_code=304, headers={"ETag": etag})
    response.headers["ETag"] = etag
    return answer
