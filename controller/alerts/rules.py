"""Drift alert rules: thresholds with hysteresis. Pure: no clock, no database, no network.

A rule fires after ``fire_after`` consecutive windows at or above ``fire_above`` and
resolves after ``clear_after`` consecutive windows below ``clear_below`` (lower than
``fire_above``), so a metric hovering at the threshold does not flap. Windows with too few
detections to say anything leave the track as it is.

A rule judges one ``scope``: each ``device`` on its own windows (the default), or a group of
devices on the same windows summed per ``bucket_s`` of window end time: ``site`` (the
``site`` label), ``label:KEY`` (any label), ``model_version`` (the whole fleet running a
version). A group is always split by model version too: drift is against its card.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from enum import Enum

METRICS = ("psi", "js", "wasserstein")
SCOPES = ("device", "site", "model_version")  # or label:KEY
_LABEL_SCOPE = re.compile(r"^label:[A-Za-z0-9_.-]{1,64}$")


@dataclass(frozen=True)
class Rule:
    metric: str = "psi"  # psi | js | wasserstein (shared/card.py drift_scores)
    fire_above: float = 0.25  # PSI > 0.25 is the usual "large shift"
    clear_below: float = 0.1
    fire_after: int = 2  # consecutive windows
    clear_after: int = 2  # consecutive windows
    min_detections: int = 20  # detections a window (a group's bucket) needs to count at all
    scope: str = "device"  # device | site | label:KEY | model_version
    bucket_s: float = 60.0  # group scopes: seconds of window end time summed into one look

    def __post_init__(self) -> None:
        if self.scope not in SCOPES and not _LABEL_SCOPE.match(self.scope):
            raise ValueError(f"unknown scope {self.scope!r} (device, site, label:KEY, "
                             "model_version)")  # fmt: skip
        if self.bucket_s <= 0:
            raise ValueError("bucket_s must be above 0")
        if self.metric not in METRICS:
            raise ValueError(f"unknown metric {self.metric!r} (one of {', '.join(METRICS)})")
        if self.clear_below > self.fire_above:
            raise ValueError("clear_below must not be above fire_above (that is hysteresis)")
        if self.fire_after < 1 or self.clear_after < 1:
            raise ValueError("fire_after and clear_after count windows: at least 1")


@dataclass(frozen=True)
class Track:
    """Where one scope (a device, for one rule) stands."""

    firing: bool = False
    above: int = 0  # consecutive windows at or above fire_above
    below: int = 0  # consecutive windows below clear_below


class Transition(str, Enum):
    NONE = "none"
    FIRE = "fire"
    RESOLVE = "resolve"


def step(
    rule: Rule, track: Track, value: float | None, detections: int
) -> tuple[Track, Transition]:
    """The next track after one window, and whether an alert fires or resolves."""
    if value is None or detections < rule.min_detections:
        return track, Transition.NONE
    above = track.above + 1 if value >= rule.fire_above else 0
    below = track.below + 1 if value < rule.clear_below else 0
    nxt = replace(track, above=above, below=below)
    if not track.firing and above >= rule.fire_after:
        return replace(nxt, firing=True, below=0), Transition.FIRE
    if track.firing and below >= rule.clear_after:
        return replace(nxt, firing=False, above=0), Transition.RESOLVE
    return nxt, Transition.NONE


def group_scope(
    rule: Rule, labels: dict[str, str], model: str | None, version: str | None
) -> str | None:
    """The group a window of a device with these labels counts in (scope != device), or
    None when it counts in none (no such label, or no model version)."""
    if model is None or version is None:
        return None
    tag = f"{model}:{version}"
    if rule.scope == "model_version":
        return f"model:{tag}"
    key = "site" if rule.scope == "site" else rule.scope.removeprefix("label:")
    value = labels.get(key)
    if value is None:
        return None
    return f"site:{value}/{tag}" if rule.scope == "site" else f"label:{key}={value}/{tag}"


@dataclass
class Bucket:
    """The windows of one group whose end falls in one ``bucket_s`` span, summed."""

    index: int  # window end // bucket_s
    model: str
    version: str
    counts: list[int]
    detections: int = 0
    windows: int = 0
    labels: dict[str, str] = field(default_factory=dict)  # the group's label, if any


class Aggregator:
    """Sums windows per (rule, group, bucket); a bucket is closed (handed back once, to be
    judged) when a window of a later bucket arrives for its group, or by :meth:`expire`.
    A window for a bucket already closed is late and not counted."""

    def __init__(self) -> None:
        self.open: dict[tuple[int, str], Bucket] = {}  # (rule index, scope) -> bucket
        self.closed: dict[tuple[int, str], int] = {}  # last closed bucket index
        self.late = 0

    def add(self, rule_i: int, scope: str, window: Bucket) -> list[tuple[str, Bucket]]:
        """Count one window (as a bucket of one); returns the buckets it closes."""
        key = (rule_i, scope)
        if window.index <= self.closed.get(key, -1):
            self.late += 1
            return []
        out: list[tuple[str, Bucket]] = []
        bucket = self.open.get(key)
        if bucket is not None and bucket.index < window.index:
            out.append((scope, self.open.pop(key)))
            self.closed[key] = bucket.index
            bucket = None
        if bucket is None:
            self.open[key] = replace(window, counts=list(window.counts))
            return out
        if len(bucket.counts) == len(window.counts):  # else another layout: cannot be summed
            bucket.counts = [a + b for a, b in zip(bucket.counts, window.counts, strict=True)]
            bucket.detections += window.detections
            bucket.windows += window.windows
        return out

    def expire(self, rule_i: int, before: int) -> list[tuple[str, Bucket]]:
        """Close every open bucket of rule ``rule_i`` whose index is below ``before``."""
        out = []
        for key in [k for k, b in self.open.items() if k[0] == rule_i and b.index < before]:
            bucket = self.open.pop(key)
            self.closed[key] = bucket.index
            out.append((key[1], bucket))
        return out
