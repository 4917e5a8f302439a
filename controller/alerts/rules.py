"""Drift alert rules: what a look measures, against which baseline, with hysteresis.
Pure: no clock, no database, no network.

A rule fires after ``fire_after`` consecutive looks at or above ``fire_above`` and
resolves after ``clear_after`` consecutive looks below ``clear_below`` (lower than
``fire_above``), so a metric hovering at the threshold does not flap. A look without the
evidence its metric needs (``measure`` answers None) leaves the track as it is.

A rule judges one ``scope``: each ``device`` on its own windows (the default), or a group of
devices on the same windows summed per ``bucket_s`` of window end time: ``site`` (the label
named by ``site_label``), ``label:KEY`` (any label), ``model_version`` (the whole fleet on a
version). Every track and alert is keyed by (scope, model, version, metric, baseline): drift
of one version never carries over to the next.

Metrics (docs/DRIFT.md states the evidence each needs and its false-alarm behaviour):

- ``psi``, ``js``, ``wasserstein``: the confidence histogram against the baseline's; a look
  needs ``min_detections`` detections (PSI of 20 detections drawn from the card itself
  reads 0.77 on average).
- ``detection_rate``: detections per frame against the baseline's, as the share lost either
  way, ``1 - min(r, 1/r)`` with ``r = rate / baseline rate`` (a 10x fall reads 0.9, halving
  or doubling 0.5).
- ``empty_share``: the rise of the share of frames with no detection over the baseline's,
  in share points (0.1 -> 0.8 reads 0.7).

The rate metrics' floor is in frames (``enough``), however few detections they had. A
device's windows too thin for a look are summed with its next ones until they are enough;
a group's bucket is one look.

Baselines: ``card`` (the version's model card) or ``captured`` (the sum of the first
``baseline_windows`` windows that version sent in that scope).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from enum import Enum

from edgefleet.shared.card import drift_scores

HISTOGRAM_METRICS = ("psi", "js", "wasserstein")
RATE_METRICS = ("detection_rate", "empty_share")
METRICS = HISTOGRAM_METRICS + RATE_METRICS
SCOPES = ("device", "site", "model_version")  # or label:KEY
BASELINES = ("card", "captured")
_LABEL = r"[A-Za-z0-9_.-]{1,64}"
_LABEL_SCOPE = re.compile(rf"^label:{_LABEL}$")


@dataclass(frozen=True)
class Rule:
    metric: str = "psi"  # psi | js | wasserstein | detection_rate | empty_share
    fire_above: float = 0.25  # PSI > 0.25 is the usual "large shift"
    clear_below: float = 0.1
    fire_after: int = 2  # consecutive looks (windows, or buckets for a group)
    clear_after: int = 2  # consecutive looks
    min_detections: int = 200  # histogram metrics: detections a look needs (docs/DRIFT.md)
    min_frames: int = 30  # rate metrics: frames a look needs, at the least
    min_expected: float = 20.0  # rate metrics: and detections expected at the baseline rate
    scope: str = "device"  # device | site | label:KEY | model_version
    site_label: str = "site"  # the device label that names a site (scope: site)
    bucket_s: float = 60.0  # group scopes: seconds of window end time summed into one look
    baseline: str = "card"  # card | captured
    baseline_windows: int = 5  # captured: windows of the version in the scope, summed
    quiet_after_s: float = 600.0  # a firing alert whose scope sent nothing this long resolves

    def __post_init__(self) -> None:
        if self.scope not in SCOPES and not _LABEL_SCOPE.match(self.scope):
            raise ValueError(f"unknown scope {self.scope!r} (device, site, label:KEY, "
                             "model_version)")  # fmt: skip
        if not re.match(rf"^{_LABEL}$", self.site_label):
            raise ValueError(f"bad site_label {self.site_label!r}")
        if self.metric not in METRICS:
            raise ValueError(f"unknown metric {self.metric!r} (one of {', '.join(METRICS)})")
        if self.baseline not in BASELINES:
            raise ValueError(f"unknown baseline {self.baseline!r} (card or captured)")
        if self.clear_below > self.fire_above:
            raise ValueError("clear_below must not be above fire_above (that is hysteresis)")
        if self.fire_after < 1 or self.clear_after < 1 or self.baseline_windows < 1:
            raise ValueError("fire_after, clear_after and baseline_windows count: at least 1")
        if self.bucket_s <= 0 or self.quiet_after_s <= 0:
            raise ValueError("bucket_s and quiet_after_s must be above 0")
        if self.min_frames < 1 or self.min_detections < 1 or self.min_expected < 0:
            raise ValueError("min_frames and min_detections must be at least 1")


@dataclass
class Look:
    """What one window, a bucket of windows or a baseline saw, summed."""

    frames: int = 0
    detections: int = 0
    empty_frames: int | None = None  # frames with no detection; None: not reported
    counts: list[int] = field(default_factory=list)  # the confidence histogram
    windows: int = 0

    def copy(self) -> Look:
        return replace(self, counts=list(self.counts))

    def add(self, other: Look) -> None:
        self.frames += other.frames
        self.detections += other.detections
        self.windows += other.windows
        if self.empty_frames is None or other.empty_frames is None:
            self.empty_frames = None  # a window that did not say: the sum's share is unknown
        else:
            self.empty_frames += other.empty_frames
        if not self.counts:
            self.counts = list(other.counts)
        elif len(self.counts) == len(other.counts):  # else another layout: cannot be summed
            self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]


def enough(rule: Rule, look: Look, base: Look) -> bool:
    """Whether ``look`` holds the evidence the rule's metric needs against ``base``: for a
    histogram, ``min_detections``; for a rate, the frames in which the baseline rate would
    expect ``min_expected`` detections (and never fewer than ``min_frames``), however few
    detections the look actually had."""
    if rule.metric in HISTOGRAM_METRICS:
        return look.detections >= rule.min_detections
    if base.frames <= 0:
        return False
    rate = base.detections / base.frames
    need = rule.min_frames if rate <= 0 else max(rule.min_frames, rule.min_expected / rate)
    return look.frames >= need


def measure(rule: Rule, look: Look, base: Look, edges: list[float]) -> float | None:
    """The rule's metric for ``look`` against ``base``; None without enough evidence."""
    if not enough(rule, look, base):
        return None
    if rule.metric in HISTOGRAM_METRICS:
        return drift_scores(base.counts, look.counts, edges).get(rule.metric)
    if rule.metric == "detection_rate":
        return rate_change(look.detections / look.frames, base.detections / base.frames)
    if look.empty_frames is None or base.empty_frames is None:
        return None
    return max(0.0, look.empty_frames / look.frames - base.empty_frames / base.frames)


def rate_change(rate: float, ref: float) -> float:
    """The share lost either way: ``1 - min(r, 1/r)`` of ``r = rate / ref``, 0 when equal,
    1 when one side is zero and the other is not."""
    if rate <= 0 or ref <= 0:
        return 0.0 if rate == ref else 1.0
    r = rate / ref
    return 1.0 - min(r, 1.0 / r)


@dataclass(frozen=True)
class Track:
    """Where one (rule, scope, model, version) stands."""

    firing: bool = False
    above: int = 0  # consecutive looks at or above fire_above
    below: int = 0  # consecutive looks below clear_below


class Transition(str, Enum):
    NONE = "none"
    FIRE = "fire"
    RESOLVE = "resolve"


def step(rule: Rule, track: Track, value: float | None) -> tuple[Track, Transition]:
    """The next track after one look, and whether an alert fires or resolves."""
    if value is None or math.isnan(value):
        return track, Transition.NONE
    above = track.above + 1 if value >= rule.fire_above else 0
    below = track.below + 1 if value < rule.clear_below else 0
    nxt = replace(track, above=above, below=below)
    if not track.firing and above >= rule.fire_after:
        return replace(nxt, firing=True, below=0), Transition.FIRE
    if track.firing and below >= rule.clear_after:
        return replace(nxt, firing=False, above=0), Transition.RESOLVE
    return nxt, Transition.NONE


def scope_of(rule: Rule, device_id: str, labels: dict[str, str]) -> str | None:
    """The scope a window of this device counts in for this rule, or None (no such label).
    ``device:cam-1``, ``site:north``, ``label:store=12``, ``fleet``."""
    if rule.scope == "device":
        return f"device:{device_id}"
    if rule.scope == "model_version":
        return "fleet"
    key = rule.site_label if rule.scope == "site" else rule.scope.removeprefix("label:")
    value = labels.get(key)
    if value is None:
        return None
    return f"site:{value}" if rule.scope == "site" else f"label:{key}={value}"


def scope_label(rule: Rule, labels: dict[str, str]) -> dict[str, str]:
    """The label a group scope is defined by, for the alert's ``labels``."""
    if rule.scope == "device":
        return dict(labels)
    key = rule.site_label if rule.scope == "site" else rule.scope.removeprefix("label:")
    return {key: labels[key]} if key in labels else {}


@dataclass
class Bucket:
    """The windows of one group and version whose end falls in one ``bucket_s`` span."""

    index: int  # window end // bucket_s
    model: str
    version: str
    look: Look
    labels: dict[str, str] = field(default_factory=dict)  # the group's label, if any


GroupKey = tuple[int, str, str, str]  # (rule index, scope, model, version)


class Aggregator:
    """Sums windows per (rule, group, version, bucket); a bucket is closed (handed back once,
    to be judged) when a window of a later bucket arrives for its key, or by :meth:`expire`.
    A window for a bucket already closed is late and not counted."""

    def __init__(self) -> None:
        self.open: dict[GroupKey, Bucket] = {}
        self.closed: dict[GroupKey, int] = {}  # last closed bucket index
        self.late = 0

    def add(self, key: GroupKey, window: Bucket) -> list[tuple[GroupKey, Bucket]]:
        """Count one window (as a bucket of one); returns the buckets it closes."""
        if window.index <= self.closed.get(key, -1):
            self.late += 1
            return []
        out: list[tuple[GroupKey, Bucket]] = []
        bucket = self.open.get(key)
        if bucket is not None and bucket.index < window.index:
            out.append((key, self.open.pop(key)))
            self.closed[key] = bucket.index
            bucket = None
        if bucket is None:
            self.open[key] = replace(window, look=window.look.copy())
            return out
        bucket.look.add(window.look)
        return out

    def expire(self, rule_i: int, before: int) -> list[tuple[GroupKey, Bucket]]:
        """Close every open bucket of rule ``rule_i`` whose index is below ``before``."""
        out = []
        for key in [k for k, b in self.open.items() if k[0] == rule_i and b.index < before]:
            bucket = self.open.pop(key)
            self.closed[key] = bucket.index
            out.append((key, bucket))
        return out
