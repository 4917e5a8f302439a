"""The rollout spec: one pydantic model behind the API body, the CLI flags and the YAML file.

Only pydantic and the standard library here, so the operator CLI can validate a file
before it sends it. Every default reproduces the walking skeleton: one 100 % stage, no
soak, no ML gates, pause on failure.
"""

from __future__ import annotations

import math
import re
from enum import Enum
from typing import Any, Literal

from edgefleet.controller.rollouts.cron import parse_cron
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
# Bounds of a spec: past them a number is a typo or an attack, never a plan a person made.
MAX_STAGES = 100
MAX_DEVICES = 1_000_000  # a stage's count, max_concurrent
MAX_GATES = 64
MAX_WINDOWS = 64
MAX_SELECTOR_LABELS = 16
MAX_LABEL_CHARS = 128  # a selector key or value
MAX_DURATION_S = 366 * 86400.0  # soak, grace, install timeout
MAX_PRIORITY = 1_000_000
MAX_SAMPLES = 10**9  # a gate's min_samples / min_windows
# Model names and versions: the registry's rule (controller/registry.py check_label).
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def parse_duration(value: object) -> float:
    """``30``, ``"30s"``, ``"5m"``, ``"1.5h"`` -> seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        m = _DURATION.match(str(value))
        if not m:
            raise ValueError(f"bad duration {value!r}: expected e.g. 30s, 5m, 1h")
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    if seconds < 0 or not math.isfinite(seconds):
        raise ValueError(f"bad duration {value!r}: must be >= 0")
    return seconds


class Stage(BaseModel):
    """``count`` devices, or ``percent`` of the matching devices (rounded up)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    count: int | None = Field(default=None, ge=1, le=MAX_DEVICES)
    percent: float | None = Field(default=None, gt=0, le=100)

    @model_validator(mode="after")
    def _one(self) -> Stage:
        if (self.count is None) == (self.percent is None):
            raise ValueError("a stage is either a count or a percent")
        return self

    @classmethod
    def parse(cls, text: str) -> Stage:
        text = text.strip()
        percent = text.endswith("%")
        try:
            number = float(text[:-1]) if percent else int(text)
        except ValueError as e:
            raise ValueError(f"bad stage {text!r}: expected a count (1) or a percent (10%)") from e
        # Outside the try: a number past the bounds says so, not "expected a count".
        return cls(percent=number) if percent else cls(count=int(number))

    def devices(self, matching: int) -> int:
        """How many of ``matching`` devices this stage covers."""
        if self.count is not None:
            return min(self.count, matching)
        assert self.percent is not None
        return min(matching, math.ceil(self.percent * matching / 100 - 1e-9))

    def __str__(self) -> str:
        return str(self.count) if self.count is not None else f"{self.percent:g}%"


def parse_stages(text: str) -> list[Stage]:
    """``"1,10%,50%,100%"`` -> stages."""
    parts = [p for p in text.split(",") if p.strip()]
    if not parts:
        raise ValueError("no stages given")
    return [Stage.parse(p) for p in parts]


class Metric(str, Enum):
    """What a gate measures; :data:`DIRECTION` says which side of the threshold passes."""

    INSTALL_SUCCESS_RATE = "install_success_rate"  # committed / finished installs, canary
    ERRORS = "errors"  # reverted + failed installs of this version, canary
    P95_LATENCY_RATIO = "p95_latency_ratio"  # canary p95 / control p95 (per window, geo-mean)
    MEAN_CONFIDENCE_RATIO = "mean_confidence_ratio"  # canary mean / control mean
    PSI = "psi"  # confidence histograms, canary against control (or baseline); descriptive
    JS = "js"  # Jensen-Shannon divergence (bits) of the same histograms; descriptive
    LOW_CONFIDENCE_SHARE = "low_confidence_share"  # canary share minus control share
    CONFIDENCE_RANK = "confidence_rank"  # Mann-Whitney AUC, P(canary > control); descriptive
    DETECTION_RATE_RATIO = "detection_rate_ratio"  # canary detections/frame / control's
    CLASS_DETECTION_RATE_RATIO = "class_detection_rate_ratio"  # worst class, same ratio
    CLASS_CONFIDENCE_RATIO = "class_confidence_ratio"  # worst class, mean confidence ratio
    CARD_MAP50_DROP = "card_map50_drop"  # production card mAP50 minus the canary card's


# "max": the value must stay at or below the threshold; "min": at or above it.
DIRECTION: dict[Metric, Literal["max", "min"]] = {
    Metric.INSTALL_SUCCESS_RATE: "min",
    Metric.ERRORS: "max",
    Metric.P95_LATENCY_RATIO: "max",
    Metric.MEAN_CONFIDENCE_RATIO: "min",
    Metric.PSI: "max",
    Metric.JS: "max",
    Metric.LOW_CONFIDENCE_SHARE: "max",
    Metric.CONFIDENCE_RANK: "min",
    Metric.DETECTION_RATE_RATIO: "min",
    Metric.CLASS_DETECTION_RATE_RATIO: "min",
    Metric.CLASS_CONFIDENCE_RATIO: "min",
    Metric.CARD_MAP50_DROP: "max",
}
# Hard gates fail a stage at once; descriptive ones (no error control) are shown, never
# stop a stage; the rest are sequential tests (docs/CANARY.md).
HARD: frozenset[Metric] = frozenset(
    {Metric.INSTALL_SUCCESS_RATE, Metric.ERRORS, Metric.CARD_MAP50_DROP}
)
DESCRIPTIVE: frozenset[Metric] = frozenset({Metric.PSI, Metric.JS, Metric.CONFIDENCE_RANK})


class Gate(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    metric: Metric
    threshold: float = Field(allow_inf_nan=False)
    # Minimum evidence, in each arm: devices for install gates, frames for frame gates,
    # detections for confidence gates (per class for the class gates).
    min_samples: int = Field(default=1, ge=0, le=MAX_SAMPLES)
    min_windows: int = Field(default=5, ge=1, le=MAX_SAMPLES)  # telemetry windows in each arm


# Thresholds a person would pick first; ``edgefleet rollout create --gates ml`` uses them.
# Statistical gates fail only when the sequential test is sure (false-alarm rate
# ``RolloutSpec.false_alarm_rate`` over all gates and looks) the true value is past the
# threshold, so each threshold is the harm tolerated, not a noise margin.
ML_GATES: tuple[Gate, ...] = (
    # Offline, before any device: both versions' cards on the same labelled images.
    Gate(metric=Metric.CARD_MAP50_DROP, threshold=0.05, min_samples=1),
    Gate(metric=Metric.INSTALL_SUCCESS_RATE, threshold=1.0, min_samples=1),
    Gate(metric=Metric.ERRORS, threshold=0, min_samples=1),
    Gate(metric=Metric.P95_LATENCY_RATIO, threshold=1.5, min_samples=200),
    Gate(metric=Metric.MEAN_CONFIDENCE_RATIO, threshold=0.9, min_samples=50),
    Gate(metric=Metric.CLASS_CONFIDENCE_RATIO, threshold=0.8, min_samples=20),
    Gate(metric=Metric.DETECTION_RATE_RATIO, threshold=0.8, min_samples=200),
    Gate(metric=Metric.CLASS_DETECTION_RATE_RATIO, threshold=0.5, min_samples=20),
    Gate(metric=Metric.LOW_CONFIDENCE_SHARE, threshold=0.15, min_samples=50),
    Gate(metric=Metric.PSI, threshold=0.5, min_samples=50),
)


class MaintenanceWindow(BaseModel):
    """Devices matching ``selector`` take new models only while ``cron`` matches.

    ``cron`` is the usual five fields (minute hour day-of-month month day-of-week, Sunday
    = 0) naming the minutes that are open, e.g. ``"* 1-4 * * *"`` for 01:00-04:59 in
    ``timezone``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    cron: str
    timezone: str = "UTC"
    selector: dict[str, str] = Field(default_factory=dict)

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str) -> str:
        parse_cron(v)
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as e:
            raise ValueError(f"unknown time zone {v!r}") from e
        return v


class ShadowSpec(BaseModel):
    """Shadow the challenger beside the champion on the device before the swap, in the
    listed stages (1-based; None: every stage). Carried to the agent in its signed director
    metadata; the agent config's ``shadow`` applies where the rollout says nothing."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    frames: int = Field(default=20, ge=1, le=10_000)  # sampled live frames compared
    timeout_s: float = Field(default=60.0, gt=0, le=3600)  # seconds to wait for them
    min_match_rate: float | None = Field(default=None, ge=0, le=1)  # refuse below; None: report
    stages: list[int] | None = Field(default=None, max_length=MAX_STAGES)

    def wire(self) -> dict[str, Any]:
        """What the director's ``custom`` carries to the agent: integers only, as TUF's
        canonical JSON has no floats (the rate in thousandths)."""
        rate = self.min_match_rate
        return {"frames": self.frames, "timeout_s": math.ceil(self.timeout_s),
                "min_match_permille": None if rate is None else round(rate * 1000)}  # fmt: skip

    def in_stage(self, number: int) -> bool:
        return self.stages is None or number in self.stages


class RolloutSpec(BaseModel):
    """Everything a rollout is; stored as given with the rollout row."""

    model_config = ConfigDict(extra="forbid")
    model: str
    version: str
    selector: dict[str, str] = Field(default_factory=dict)
    stages: list[Stage] = Field(
        default_factory=lambda: [Stage(percent=100)], min_length=1, max_length=MAX_STAGES
    )
    soak_s: float = 0.0  # seconds each stage runs after its devices committed
    gates: list[Gate] = Field(default_factory=list, max_length=MAX_GATES)
    on_failure: Literal["pause", "rollback"] = "pause"
    max_concurrent: int | None = Field(default=None, ge=1, le=MAX_DEVICES)  # downloads at once
    maintenance_windows: list[MaintenanceWindow] = Field(
        default_factory=list, max_length=MAX_WINDOWS
    )
    priority: int = Field(default=0, ge=-MAX_PRIORITY, le=MAX_PRIORITY)  # higher goes first
    stratify_by: str | None = None  # label the first stages should span (e.g. site)
    # Control devices must share these labels with a canary (default: stratify_by).
    match_labels: list[str] | None = None
    nodata_grace_s: float | None = None  # seconds past the soak before NODATA pauses
    # Seconds an assigned device has to commit or refuse (from its assignment or the stage's
    # restart); past that the stage is Inconclusive and pauses for a person.
    install_timeout_s: float = Field(default=1800.0, gt=0)
    # Chance that a harmless canary fails a stage, over all statistical gates and all
    # looks (mSPRT per gate at false_alarm_rate / gates; docs/CANARY.md).
    false_alarm_rate: float = Field(default=0.01, gt=0, lt=0.5)
    shadow: ShadowSpec | None = None  # a shadow phase on the device, per stage

    @model_validator(mode="after")
    def _shadow_stages(self) -> RolloutSpec:
        bad = [n for n in (self.shadow.stages or []) if not 1 <= n <= len(self.stages)] if (
            self.shadow) else []  # fmt: skip
        if bad:
            raise ValueError(f"shadow stages {bad}: stages are numbered 1 to {len(self.stages)}")
        return self

    @field_validator("stages", mode="before")
    @classmethod
    def _stages(cls, v: Any) -> Any:
        if isinstance(v, str):
            return parse_stages(v)
        if isinstance(v, list):
            return [Stage.parse(str(s)) if isinstance(s, (str, int)) else s for s in v]
        return v

    @field_validator("soak_s", "nodata_grace_s", "install_timeout_s", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> Any:
        if v is None:
            return None
        seconds = parse_duration(v)
        if seconds > MAX_DURATION_S:
            raise ValueError(f"duration {v!r} is longer than {MAX_DURATION_S / 86400:g} days")
        return seconds

    @field_validator("model", "version")
    @classmethod
    def _name(cls, v: str, info: Any) -> str:
        if not _NAME.match(v) or ".." in v:
            what = "model name" if info.field_name == "model" else "version"
            raise ValueError(f"invalid {what} {v!r}: use letters, digits, . _ - (max 64)")
        return v

    @field_validator("selector")
    @classmethod
    def _selector(cls, v: dict[str, str]) -> dict[str, str]:
        if len(v) > MAX_SELECTOR_LABELS:
            raise ValueError(f"a selector has at most {MAX_SELECTOR_LABELS} labels")
        for key, value in v.items():
            if not key or len(key) > MAX_LABEL_CHARS or len(value) > MAX_LABEL_CHARS:
                raise ValueError(f"selector label {key[:40]!r}: 1 to {MAX_LABEL_CHARS} characters")
        return v

    @field_validator("gates", mode="before")
    @classmethod
    def _gates(cls, v: Any) -> Any:
        return list(ML_GATES) if v == "ml" else v

    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, data: Any) -> Any:
        # YAML files read better with "soak: 5m"; accept it as soak_s.
        if isinstance(data, dict) and "soak" in data:
            data = {"soak_s": data["soak"], **data}  # an explicit soak_s wins
            del data["soak"]
        return data

    @property
    def control_labels(self) -> list[str]:
        if self.match_labels is not None:
            return self.match_labels
        return [self.stratify_by] if self.stratify_by else []

    @property
    def grace_s(self) -> float:
        return self.soak_s if self.nodata_grace_s is None else self.nodata_grace_s

    def stage_counts(self, matching: int) -> list[int]:
        """Devices covered after each stage; never shrinking."""
        out: list[int] = []
        for stage in self.stages:
            out.append(max(stage.devices(matching), out[-1] if out else 0))
        return out
