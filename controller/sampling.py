"""Sampler settings per device group: label selectors mapped to the agent's ``sampling:``.

Rules are tried in the order they were first set; the first whose selector matches the
device's labels (every ``key=value`` of the selector) gives the device its settings, else
the device keeps its local config. ``edgefleet sampling set --selector site=a FILE`` sets
one (the same selector again replaces its settings in place).
"""

from __future__ import annotations

from typing import Any

from edgefleet.controller.models.devices import Device
from edgefleet.controller.models.samples import SamplingRule
from edgefleet.shared.errors import ConfigError, NotFoundError
from edgefleet.shared.protocol import utcnow
from edgefleet.shared.sampling import SamplingConfig
from pydantic import ValidationError
from sqlmodel import Session, col, select

MAX_LABELS = 16


def parse_selector(text: str) -> dict[str, str]:
    """``site=a,store=3`` -> {"site": "a", "store": "3"}; empty text: every device."""
    out: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        key, eq, value = part.partition("=")
        if not eq or not key.strip() or not value.strip():
            raise ConfigError(f"bad selector {part!r}: expected key=value[,key=value]")
        out[key.strip()] = value.strip()
    if len(out) > MAX_LABELS:
        raise ConfigError(f"a selector has at most {MAX_LABELS} labels")
    return out


def check_settings(raw: object) -> dict[str, Any]:
    """The agent's own validation of ``sampling:``; one line on a problem."""
    try:
        config = SamplingConfig.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "sampling"
        raise ConfigError(f"sampling settings: {where}: {err['msg']}") from e
    return config.model_dump(mode="json")


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def list_rules(session: Session) -> list[SamplingRule]:
    return list(session.exec(select(SamplingRule).order_by(col(SamplingRule.id))).all())


def set_rule(session: Session, selector: dict[str, str], settings: object) -> SamplingRule:
    checked = check_settings(settings)
    row = next((r for r in list_rules(session) if r.selector == selector), None)
    if row is None:
        row = SamplingRule(selector=dict(selector), settings=checked)
    else:
        row.settings, row.updated_at = checked, utcnow()
    session.add(row)
    session.commit()
    session.refresh(row)
    return row


def delete_rule(session: Session, selector: dict[str, str]) -> None:
    row = next((r for r in list_rules(session) if r.selector == selector), None)
    if row is None:
        raise NotFoundError(f"no sampling rule for selector {selector}")
    session.delete(row)
    session.commit()


def effective(
    session: Session, device_id: str, reported: dict[str, str]
) -> tuple[SamplingRule | None, dict[str, str]]:
    """The first rule matching the device's labels (as the controller knows them, else as
    the device reports them), and those labels."""
    device = session.get(Device, device_id)
    labels = dict(device.labels) if device is not None and device.labels else dict(reported)
    rule = next((r for r in list_rules(session) if matches(r.selector, labels)), None)
    return rule, labels
