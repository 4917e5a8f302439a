"""One scheduler tick of one rollout, decided without I/O: who is assigned next, and
whether the current stage ended (and how).

The shell (``service.advance``) reads the database into a :class:`Snapshot`, calls
:func:`plan`, and writes the :class:`Plan` back. Everything needed to decide is in the
snapshot, so a restarted controller decides the same thing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum

from edgefleet.controller.rollouts.cohorts import cohort_order
from edgefleet.controller.rollouts.gates import GateResult, Outcome, failing, stage_outcome
from edgefleet.controller.rollouts.spec import RolloutSpec
from edgefleet.controller.rollouts.windows import may_install


class Next(str, Enum):
    STAY = "stay"  # keep assigning / soaking
    NEXT_STAGE = "next_stage"
    SUCCEED = "succeed"
    NOTHING_TO_DO = "nothing_to_do"  # no device left to assign: all pinned or excluded
    FAIL = "fail"  # the on_failure action: pause (state failed) or rollback
    PAUSE = "pause"  # inconclusive: a person decides


@dataclass(frozen=True)
class Member:
    """A device matching the selector, as far as this rollout is concerned."""

    labels: Mapping[str, str]
    assigned: bool = False
    done: bool = False  # runs the rollout's version, committed
    failed: bool = False  # reverted / failed / refused this version
    assigned_at: datetime | None = None  # when this rollout assigned it


@dataclass(frozen=True)
class Snapshot:
    rollout_id: int
    spec: RolloutSpec
    stage: int  # index into spec.stages
    ready_at: datetime | None  # when every device of the stage had committed
    members: Mapping[str, Member]
    results: Sequence[GateResult] = ()  # gates of the current stage, evaluated by the shell
    stage_started_at: datetime | None = None  # (re)started: a resume restarts the clocks


@dataclass(frozen=True)
class Plan:
    assign: list[str] = field(default_factory=list)
    ready_at: datetime | None = None
    outcome: Outcome = Outcome.PENDING
    next: Next = Next.STAY
    reason: str | None = None
    wanted: int = 0  # devices this stage covers


def _to_assign(snap: Snapshot, wanted: Sequence[str], now: datetime) -> list[str]:
    spec = snap.spec
    in_flight = sum(1 for m in snap.members.values() if m.assigned and not (m.done or m.failed))
    room = (spec.max_concurrent - in_flight) if spec.max_concurrent else len(wanted)
    missing = [
        d
        for d in wanted
        if not snap.members[d].assigned
        and may_install(spec.maintenance_windows, snap.members[d].labels, now)
    ]
    return missing[: max(room, 0)]


def stage_devices(
    rollout_id: int, spec: RolloutSpec, stage: int, members: Mapping[str, Mapping[str, str]]
) -> list[str]:
    """The members (id -> labels) that stage ``stage`` (0-based) and those before it cover."""
    order = cohort_order(rollout_id, members, spec.stratify_by)
    return order[: spec.stage_counts(len(order))[stage]]


def plan(snap: Snapshot, now: datetime) -> Plan:
    spec = snap.spec
    if not snap.members:  # never "succeeded 0/0": say that nobody was left to update
        why = "nothing to do: every matching device is pinned to another version"
        return Plan(next=Next.NOTHING_TO_DO, reason=why)
    wanted = stage_devices(
        snap.rollout_id, spec, snap.stage, {d: m.labels for d, m in snap.members.items()}
    )
    assign = _to_assign(snap, wanted, now)
    covered = all(snap.members[d].assigned for d in wanted) and not assign
    all_done = covered and all(m.done for m in snap.members.values() if m.assigned)
    ready_at = snap.ready_at or (now if all_done and not assign else None)
    soaked = ready_at is not None and (now - ready_at).total_seconds() >= spec.soak_s
    graced = ready_at is not None and (now - ready_at).total_seconds() >= spec.soak_s + spec.grace_s
    outcome = stage_outcome(snap.results, soak_over=soaked, grace_over=graced)
    base = Plan(assign=assign, ready_at=ready_at, outcome=outcome, wanted=len(wanted))
    label = f"stage {snap.stage + 1} ({spec.stages[snap.stage]})"
    if outcome is Outcome.FAILED:
        why = ", ".join(failing(snap.results))
        return _with(base, Next.FAIL, f"{label} failed: {why}", assign=[])
    silent = _silent(snap, now)
    if silent:
        shown = ", ".join(silent[:5]) + (f" and {len(silent) - 5} more" if len(silent) > 5 else "")
        why = (f"{label} inconclusive: {len(silent)} device(s) neither committed nor refused "
               f"within {spec.install_timeout_s:g} s: {shown}")  # fmt: skip
        return _with(base, Next.PAUSE, why, assign=[], outcome=Outcome.INCONCLUSIVE)
    if outcome is Outcome.INCONCLUSIVE:
        nodata = ", ".join(r.metric for r in snap.results if r.verdict.value == "NODATA")
        return _with(base, Next.PAUSE, f"{label} inconclusive: no data for {nodata}", assign=[])
    if outcome is Outcome.SUCCESSFUL:
        last = snap.stage == len(spec.stages) - 1
        return _with(base, Next.SUCCEED if last else Next.NEXT_STAGE, f"{label} successful")
    return base


def _silent(snap: Snapshot, now: datetime) -> list[str]:
    """Assigned devices that neither committed nor failed/refused within the install
    timeout, counted from their assignment or the stage's (re)start, whichever is later."""
    out = []
    for device_id, m in sorted(snap.members.items()):
        if not m.assigned or m.done or m.failed or m.assigned_at is None:
            continue
        since = max(m.assigned_at, snap.stage_started_at or m.assigned_at)
        if (now - since).total_seconds() >= snap.spec.install_timeout_s:
            out.append(device_id)
    return out


def _with(
    p: Plan,
    nxt: Next,
    reason: str,
    assign: list[str] | None = None,
    outcome: Outcome | None = None,
) -> Plan:
    return Plan(
        assign=p.assign if assign is None else assign,
        ready_at=p.ready_at,
        outcome=p.outcome if outcome is None else outcome,
        next=nxt,
        reason=reason,
        wanted=p.wanted,
    )
