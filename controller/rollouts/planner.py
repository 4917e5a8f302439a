"""The pure part of rollouts: who matches a selector, and how far a rollout got.

No database, MQTT or clock in here: callers pass the devices' reports in and persist the
answers themselves.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from edgefleet.shared.protocol import Phase


@dataclass(frozen=True)
class DeviceReport:
    """What the controller knows about one device's progress."""

    device_id: str
    model: str | None = None
    version: str | None = None
    phase: str | None = None
    desired_model: str | None = None
    desired_version: str | None = None
    failed_model: str | None = None  # last version the device said it reverted / failed
    failed_version: str | None = None


@dataclass(frozen=True)
class DeviceProgress:
    report: DeviceReport
    done: bool
    failed: bool
    refused: str | None = None  # why the device refused its assignment (then failed)


@dataclass(frozen=True)
class RolloutProgress:
    """How far a rollout's devices got. Its state is not derived from this: it is a record
    that only the lifecycle table changes (``lifecycle.py``)."""

    devices: tuple[DeviceProgress, ...]

    @property
    def total(self) -> int:
        return len(self.devices)

    @property
    def done(self) -> int:
        return sum(d.done for d in self.devices)

    @property
    def failed(self) -> int:
        return sum(d.failed for d in self.devices)


def matches(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """Every ``key=value`` of the selector is among the labels (empty selects all)."""
    return all(labels.get(k) == v for k, v in selector.items())


def select_devices(
    selector: Mapping[str, str], devices: Iterable[tuple[str, Mapping[str, str]]]
) -> list[str]:
    """Device ids (sorted) whose labels match ``selector``."""
    return sorted(device_id for device_id, labels in devices if matches(selector, labels))


def device_progress(
    model: str, versions: Collection[str], report: DeviceReport, refused: str | None = None
) -> DeviceProgress:
    """``versions``: the rollout's version and its re-signed copies (``releases.aliases``),
    any of which the device may run. ``refused``: the reason of a refusal the device
    reported after it was assigned."""
    runs_it = report.model == model and report.version in versions
    done = runs_it and report.phase == Phase.COMMITTED.value
    # Failed only by a FAILED / REVERTED event naming this version (the shell clears it on
    # assignment): a FAILED or REVERTED phase in the device's state may be left over from
    # an older attempt, and a rollout that read it failed the moment it was created.
    failed_event = report.failed_model == model and report.failed_version in versions
    failed = not done and (failed_event or refused is not None)
    return DeviceProgress(report, done, failed, None if done else refused)


def rollout_progress(
    model: str,
    versions: Collection[str],
    reports: Iterable[DeviceReport],
    refusals: Mapping[str, str] | None = None,
) -> RolloutProgress:
    """Per-device outcome: done (runs one of ``versions``, committed), failed (reverted,
    failed or refused it) or neither yet."""
    why = refusals or {}
    return RolloutProgress(
        tuple(device_progress(model, versions, r, why.get(r.device_id)) for r in reports)
    )
