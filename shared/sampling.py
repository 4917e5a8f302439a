"""Sampling settings: which frames a device keeps for annotation, and its budgets.

The agent runs them (agent/sampler.py); the controller stores and serves the fleet's
rules in the same shape (controller/sampling.py), so the schema lives here.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class StrategyConfig(BaseModel):
    """One named way of choosing frames, with its own budget."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    kind: Literal["near_threshold", "random", "class", "detection_count"]
    band: tuple[float, float] = (0.1, 0.4)  # near_threshold: a score in [low, high)
    share: float = Field(default=0.01, ge=0, le=1)  # random: share of frames
    classes: list[str] = Field(default_factory=list)  # class: any detection of these
    min_detections: int | None = Field(default=None, ge=0)  # detection_count: at least
    max_detections: int | None = Field(default=None, ge=0)  # detection_count: at most
    per_minute: int | None = Field(default=None, ge=0)  # frames
    per_hour: int | None = Field(default=None, ge=0)  # frames
    per_day: int | None = Field(default=None, ge=0)  # frames
    bytes_per_day: int | None = Field(default=None, ge=0)  # bytes of JPEG

    @model_validator(mode="after")
    def _kind_fields(self) -> StrategyConfig:
        if self.kind == "class" and not self.classes:
            raise ValueError(f"strategy {self.name}: kind class needs classes")
        if self.kind == "detection_count" and (
            self.min_detections is None and self.max_detections is None
        ):
            raise ValueError(f"strategy {self.name}: needs min_detections or max_detections")
        if not 0 <= self.band[0] < self.band[1] <= 1:
            raise ValueError(f"strategy {self.name}: band must be 0 <= low < high <= 1")
        return self


def _default_strategies() -> list[StrategyConfig]:
    return [
        StrategyConfig(
            name="uncertain",
            kind="near_threshold",
            per_minute=2,
            per_hour=30,
            per_day=200,
            bytes_per_day=50_000_000,
        ),
        StrategyConfig(
            name="random",
            kind="random",
            share=0.002,
            per_hour=5,
            per_day=50,
            bytes_per_day=10_000_000,
        ),
    ]


class DriftSamplingConfig(BaseModel):
    """Budget kept for a changed scene, and how the device knows its scene changed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # share of each strategy's hourly and daily frames held back while the scene is as
    # the card describes it; released while drifting
    reserve: float = Field(default=0.5, ge=0, le=1)
    # extra near_threshold frames per hour while drifting, past the strategies' own limits
    burst_per_hour: int = Field(default=30, ge=0)
    burst_spacing_s: float = Field(default=5.0, ge=0)  # seconds between two burst frames
    # the device's own drift score: a window at or above this PSI against its card ...
    psi_above: float = Field(default=0.25, gt=0)
    # ... or with detections per frame below this share of the card's (the scene lost them)
    dpf_ratio_below: float = Field(default=0.5, ge=0, le=1)
    min_frames: int = Field(default=5, ge=1)  # frames a window needs to count either way
    hold_s: float = Field(default=900.0, ge=0)  # seconds drifting lasts after the last sign


class SamplingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    strategies: list[StrategyConfig] = Field(default_factory=_default_strategies)
    # spread each strategy's hourly frames over the hour (a token bucket) rather than
    # taking them as fast as per_minute allows
    pace: bool = True
    drift: DriftSamplingConfig = Field(default_factory=DriftSamplingConfig)
    candidate_floor: float = Field(default=0.05, ge=0, le=1)  # candidates below this: noise
    jpeg_quality: int = Field(default=85, ge=10, le=100)
    spool_max_items: int = Field(default=500, ge=1)  # samples kept while not uploaded
    spool_max_bytes: int = Field(default=200_000_000, ge=1)  # bytes on disk for them
    upload_interval_s: float = Field(default=5.0, gt=0)  # seconds between upload rounds
    queue_size: int = Field(default=8, ge=1)  # frames waiting for the JPEG encoder
    # seconds between (conditional, mostly 304) asks for the controller's settings while
    # the MQTT link is down: how late a changed rule may reach the device, against one
    # request per device per period
    settings_refresh_s: float = Field(default=300.0, gt=0)
    # ... and while it is up: the controller announces a change (``settings`` command) and
    # the agent asks on each reconnect, so this ask is only a safety net
    settings_refresh_connected_s: float = Field(default=3600.0, ge=60, le=86400)
