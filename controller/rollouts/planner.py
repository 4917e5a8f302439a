"""The pure part of rollouts: who matches a selector, and how far a rollout got.

No database, MQTT or clock in here: callers pass the devices' reports in and persist the
answers themselves.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum

from edgefleet.shared.protocol import Phase

_FAILED_PHASES = frozenset({Phase.REVERTED.value, Phase.FAILED.value})


class RolloutState(str, Enum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


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


@dataclass(frozen=True)
class RolloutProgress:
    state: RolloutState
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


def device_progress(model: str, version: str, report: DeviceReport) -> DeviceProgress:
    runs_it = report.model == model and report.version == version
    done = runs_it and report.phase == Phase.COMMITTED.value
    failed_event = report.failed_model == model and report.failed_version == version
    # A revert reported while still aiming at this version counts against it too.
    aiming = report.desired_model == model and report.desired_version == version
    failed = not done and (failed_event or (report.phase in _FAILED_PHASES and (runs_it or aiming)))
    return DeviceProgress(report, done, failed)


def rollout_progress(model: str, version: str, reports: Iterable[DeviceReport]) -> RolloutProgress:
    """Per-device outcome and the rollout's state.

    failed as soon as one device failed this version; succeeded when every device runs it
    committed (vacuously for a rollout that matched no device); running otherwise.
    """
    devices = tuple(device_progress(model, version, r) for r in reports)
    if any(d.failed for d in devices):
        state = RolloutState.FAILED
    elif all(d.done for d in devices):
        state = RolloutState.SUCCEEDED
    else:
        state = RolloutState.RUNNING
    return RolloutProgress(state, devices)
