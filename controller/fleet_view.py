"""Desired beside reported, per device: what it should run and which rule said so, what it
says it runs (version, release, phase, since when), and why the two differ.

:func:`waiting` is the pure decision; :func:`fleet` reads the tables it needs in a fixed
number of queries (not one per device) and builds ``DevicePublic`` rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from edgefleet.controller import pins as pinlib
from edgefleet.controller.models.base import as_utc as _utc
from edgefleet.controller.models.devices import Device, DevicePublic
from edgefleet.controller.models.registry import ModelVersion
from edgefleet.controller.models.rollouts import Rollout, RolloutDevice
from edgefleet.controller.models.telemetry import EventRow
from edgefleet.controller.registry import source_label
from edgefleet.controller.rollouts import pinning, releases
from edgefleet.controller.rollouts.advance import stage_devices
from edgefleet.controller.rollouts.context import spec_of
from edgefleet.controller.rollouts.lifecycle import RolloutState
from edgefleet.controller.rollouts.planner import matches
from edgefleet.controller.rollouts.spec import RolloutSpec
from edgefleet.controller.rollouts.windows import next_open
from edgefleet.shared.protocol import Phase
from sqlalchemy import func
from sqlmodel import Session, col, select

_AT_REST = (None, Phase.IDLE.value, Phase.COMMITTED.value)


@dataclass(frozen=True)
class Facts:
    """One device, as far as "does it run what it should" is concerned."""

    online: bool
    runs_desired: bool  # runs the desired version (or a re-signed copy of it)
    has_desired: bool
    phase: str | None
    error: str | None
    refused: str | None = None  # a refusal reported after its last commit
    failed_desired: bool = False  # it reported the desired version failed / reverted
    desired_release: int | None = None
    installed_release: int | None = None  # the highest it ever committed of that model
    window_opens: datetime | None = None  # a running rollout waits for its window
    now: datetime | None = None  # the day a window opening on another is told from


def opens(at: datetime, now: datetime | None) -> str:
    """``13:00 UTC`` today, ``11-24 13:00 UTC`` another day (as ``rollout status``)."""
    at = at.astimezone(timezone.utc)
    same_day = now is None or at.date() == now.astimezone(timezone.utc).date()
    return f"{at:%H:%M} UTC" if same_day else f"{at:%m-%d %H:%M} UTC"


def waiting(f: Facts) -> str | None:
    """Why the device does not run its desired version (None: it does, or has none)."""
    window = f"window closed (opens {opens(f.window_opens, f.now)})" if f.window_opens else None
    if not f.has_desired or f.runs_desired:
        return window  # a running rollout would move it, but its window is closed
    older = (f.desired_release is not None and f.installed_release is not None
             and f.desired_release < f.installed_release)  # fmt: skip
    reasons = [  # the first that holds says why
        (not f.online, "offline"),
        (f.refused is not None, f"refused: {f.refused}"),
        (older, f"older release: {f.desired_release} < installed {f.installed_release}"),
        (f.failed_desired, f"failed: {f.error or 'reported failed'}"),
        (f.phase not in _AT_REST, f"installing ({f.phase})"),
    ]
    return next((text for holds, text in reasons if holds), window or "not started yet")


def fleet(session: Session, devices: Sequence[Device], now: datetime) -> list[DevicePublic]:
    rules = pinning.load(session)
    release = {
        (m, v): r
        for m, v, r in session.exec(
            select(ModelVersion.name, ModelVersion.version, ModelVersion.release)
        ).all()
    }
    since = _last(session, "phase")
    committed = _last(session, "phase", Phase.COMMITTED)
    refused_at = _last(session, "rejected")
    reasons = _reasons(session, refused_at)
    claims = _rollout_of(session)
    windows = _windows(session, rules)
    installed: dict[tuple[str, str], int] = {}
    for model in {d.desired_model for d in devices if d.desired_model}:
        ids = [d.device_id for d in devices if d.desired_model == model]
        for device_id, rel in releases.installed_releases(session, model, ids).items():
            installed[(device_id, model)] = rel
    out = []
    for d in devices:
        source = _source(d, rules, claims)
        runs = d.model == d.desired_model and d.version is not None and (
            source_label(d.version) == source_label(d.desired_version or "")
        )  # fmt: skip
        last_refusal, last_commit = refused_at.get(d.device_id), committed.get(d.device_id)
        newer = last_refusal is not None and (last_commit is None or last_refusal > last_commit)
        refused = reasons.get(d.device_id) if newer else None
        facts = Facts(
            online=d.online, runs_desired=runs, has_desired=d.desired_version is not None,
            phase=d.phase, error=d.error, refused=refused,
            failed_desired=d.failed_version is not None and d.failed_version == d.desired_version,
            desired_release=release.get((d.desired_model or "", d.desired_version or "")),
            installed_release=installed.get((d.device_id, d.desired_model or "")),
            window_opens=_window_wait(d, windows, now), now=now,
        )  # fmt: skip
        row = DevicePublic.model_validate(d)
        row.release = release.get((d.model or "", d.version or ""))
        row.since = since.get(d.device_id)
        row.desired_by = source
        row.waiting = waiting(facts)
        out.append(row)
    return out


def _last(session: Session, kind: str, phase: Phase | None = None) -> dict[str, datetime]:
    """Each device's newest event of ``kind`` (a phase, a commit, a refusal)."""
    stmt = select(EventRow.device_id, func.max(EventRow.at)).where(EventRow.kind == kind)
    if phase is not None:
        stmt = stmt.where(EventRow.phase == phase.value)
    rows = session.exec(stmt.group_by(col(EventRow.device_id))).all()
    return {device_id: at for device_id, raw in rows if (at := _utc(raw)) is not None}


def _reasons(session: Session, refused_at: dict[str, datetime]) -> dict[str, str]:
    if not refused_at:
        return {}
    rows = session.exec(
        select(EventRow.device_id, EventRow.reason, EventRow.at).where(EventRow.kind == "rejected")
    ).all()
    return {
        device_id: reason or "refused"
        for device_id, reason, at in rows
        if _utc(at) == refused_at.get(device_id)
    }


def _rollout_of(session: Session) -> dict[str, list[tuple[int, str, str]]]:
    """Per device, the rollouts that assigned it, newest first: (id, model, version)."""
    rows = session.exec(
        select(RolloutDevice.device_id, Rollout.id, Rollout.model, Rollout.version)
        .join(Rollout, col(Rollout.id) == col(RolloutDevice.rollout_id))
        .order_by(col(Rollout.id).desc())
    ).all()
    out: dict[str, list[tuple[int, str, str]]] = {}
    for device_id, rid, model, version in rows:
        out.setdefault(device_id, []).append((rid or 0, model, version))
    return out


def _source(
    d: Device, rules: pinning.Rules, claims: dict[str, list[tuple[int, str, str]]]
) -> str | None:
    """Which rule won: ``pin/3``, ``pin/3:stable``, ``rollout/5``, ``rollout/5:rollback``
    or ``rollout/5:abort``; a deleted pin's devices keep what it set: ``pin/3 (deleted)``
    (None: none known)."""
    decision = pinlib.desired(d.device_id, d.labels, rules.pins, rules.channels)
    if decision.pinned:
        return pinning.pin_label(d, rules)
    if d.desired_version is None:
        return None
    if d.desired_set_by:
        pin_id = d.desired_set_by.partition(":")[0].removeprefix("pin/")
        gone = d.desired_set_by.startswith("pin/") and pin_id not in {str(p.id) for p in rules.pins}
        return f"{d.desired_set_by} (deleted)" if gone else d.desired_set_by
    # Rows from before desired_set_by: the newest rollout that assigned this version.
    for rid, model, version in claims.get(d.device_id, []):
        if model == d.desired_model and source_label(d.desired_version) == (source_label(version)):
            return f"rollout/{rid}"
    return None


_Windowed = tuple[RolloutSpec, set[str], set[str]]  # spec, assigned, its stage's devices


def _windows(session: Session, rules: pinning.Rules) -> list[_Windowed]:
    """Running rollouts with maintenance windows: the spec (parsed once), the devices each
    assigned, and those its current stage covers (as the scheduler picks them)."""
    running = session.exec(select(Rollout).where(Rollout.state == RolloutState.RUNNING.value)).all()
    windowed = [(r, spec) for r in running if (spec := spec_of(r)).maintenance_windows]
    if not windowed:
        return []
    labels = dict(session.exec(select(Device.device_id, Device.labels)).all())
    out = []
    for r, spec in windowed:
        assigned = set(session.exec(
            select(RolloutDevice.device_id).where(RolloutDevice.rollout_id == r.id)
        ).all())  # fmt: skip
        target = pinlib.Target(r.model, r.version)
        members = {
            device_id: lab for device_id, lab in labels.items()
            if device_id in assigned or (matches(spec.selector, lab) and not pinlib.excluded(
                device_id, dict(lab), rules.pins, rules.channels, target))
        }  # fmt: skip
        wanted = set(stage_devices(r.id or 0, spec, r.stage, members))
        out.append((spec, assigned, wanted))
    return out


def _window_wait(d: Device, windows: list[_Windowed], now: datetime) -> datetime | None:
    """When the window opens for a running rollout whose current stage covers this device
    but has not assigned it because the window is closed."""
    opens = []
    for spec, assigned, wanted in windows:
        if d.device_id in assigned or d.device_id not in wanted:
            continue
        at = next_open(spec.maintenance_windows, d.labels, now)
        if at is not None and at > now:
            opens.append(at)
    return min(opens, default=None)
