"""Canary gates: canary against matched control over the same telemetry windows (pure).

Three kinds of gate (docs/CANARY.md has the error rates and the evidence each needs):

* hard (install success, errors: reverts, crashes, non-finite outputs caught by the
  device's health check, and the canary devices' own fallback events) fail a stage at once;
* sequential (detection rate, per-class detection rate, mean and per-class confidence,
  low-confidence share, p95 latency) are mixture sequential probability ratio tests
  (mSPRT, Johari et al. 2017) of "the true value is past the threshold": the test may be
  looked at after every window and still fails a harmless canary with probability at
  most its share of ``alpha`` (Bonferroni across gates and classes), so a stage may
  fail as soon as one crosses; otherwise the gate passes at the end of the soak once
  its minimum evidence (windows, frames or detections, in both arms) is in and its
  estimate is on the good side of the threshold (past it, not yet significant: NODATA);
* descriptive (PSI, JS, rank AUC) have no error control: they are shown, WARN past their
  threshold, and never stop a stage.

Too little evidence is NODATA, never a pass. Inputs are windows; no database, no clock.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Protocol

from edgefleet.controller.rollouts.spec import DESCRIPTIVE, DIRECTION, HARD, Gate, Metric
from edgefleet.shared.drift import js_divergence, mann_whitney_binned, psi
from edgefleet.shared.histogram import quantile_interpolated

DEFAULT_ALPHA = 0.01
MIN_LATENCY_FRAMES = 10  # a window's p95 from fewer frames is too coarse to use
# Prior spread of the effect (mSPRT mixing sd): relative for ratios, absolute for the
# low-confidence share, log-scale for latency. About the smallest harm worth catching fast.
TAU = {"ratio": 0.25, "share": 0.1, "log": 0.25}
# Floors on a window's variance, so a handful of alike windows cannot claim certainty:
# 5 % relative sd of a window's p95 (more than the 9 % log bins' quantisation).
LATENCY_SD_FLOOR = 0.05


class Verdict(str, Enum):
    PASS = "PASS"  # noqa: S105 - a verdict, not a password
    FAIL = "FAIL"
    NODATA = "NODATA"
    WARN = "WARN"  # a descriptive gate past its threshold; does not stop the stage
    SKIPPED = "SKIPPED"  # needs what this rollout lacks (labelled cards); does not stop it


# What passes a stage once the soak is over.
PASSING = (Verdict.PASS, Verdict.WARN, Verdict.SKIPPED)


class Outcome(str, Enum):
    PENDING = "pending"  # soak not over, nothing failed
    SUCCESSFUL = "successful"
    FAILED = "failed"
    INCONCLUSIVE = "inconclusive"


class CardLike(Protocol):
    """What the card gate reads from a model card (shared.card.ModelCard)."""

    version: str
    labelled_images: int
    map50: float | None
    ap50_per_class: dict[str, float]


@dataclass(frozen=True)
class Cards:
    """The canary version's card and the production version's (either may be missing)."""

    canary: CardLike | None
    production: CardLike | None


class WindowLike(Protocol):
    """What gates read from a telemetry window (protocol.TelemetryWindow, the DB row)."""

    window_start: datetime
    window_end: datetime
    frames: int
    latency_edges_ms: list[float]
    latency_counts: list[int]
    confidence_edges: list[float]
    confidence_counts: list[int]
    per_class_confidence: dict[str, list[int]]
    detections: int
    low_confidence: int


@dataclass(frozen=True)
class Unit:
    """One window reduced to what the tests need (its own bins, so old layouts work)."""

    start: datetime | None
    end: datetime | None
    frames: int
    detections: int
    low: int
    conf_sum: float  # sum of confidences (bin midpoints)
    conf_sq: float
    classes: dict[str, tuple[int, float]]  # class -> (detections, sum of confidences)
    log_p95: float | None  # None: too few frames
    device: str = ""
    stratum: str = ""  # the device's match labels (set by evaluate); "" = unmatched

    @classmethod
    def of(cls, w: WindowLike) -> Unit:
        mids = _mids(w.confidence_edges)
        c = w.confidence_counts
        classes = {
            name: (sum(counts), _dot(counts, _mids(w.confidence_edges)))
            for name, counts in (w.per_class_confidence or {}).items()
            if len(counts) == len(c)
        }
        p95 = (
            quantile_interpolated(w.latency_counts, w.latency_edges_ms, 0.95)
            if w.frames >= MIN_LATENCY_FRAMES and len(w.latency_edges_ms) > 1
            else float("nan")
        )
        return cls(
            start=getattr(w, "window_start", None),
            end=getattr(w, "window_end", None),
            frames=w.frames,
            detections=w.detections,
            low=w.low_confidence,
            conf_sum=_dot(c, mids),
            conf_sq=_dot(c, [m * m for m in mids]),
            classes=classes,
            log_p95=math.log(p95) if math.isfinite(p95) and p95 > 0 else None,
            device=str(getattr(w, "device_id", "") or ""),
        )


Getter = Callable[[Unit], float]


def _mids(edges: Sequence[float]) -> list[float]:
    return [(a + b) / 2 for a, b in itertools.pairwise(edges)]


def _dot(counts: Sequence[int], mids: Sequence[float]) -> float:
    return float(sum(c * m for c, m in zip(counts, mids, strict=False)))


@dataclass
class Aggregate:
    """Windows of one group: added bin by bin, and kept one by one for the tests."""

    windows: int = 0
    frames: int = 0
    detections: int = 0
    low_confidence: int = 0
    latency_edges: list[float] = field(default_factory=list)
    latency_counts: list[int] = field(default_factory=list)
    confidence_edges: list[float] = field(default_factory=list)
    confidence_counts: list[int] = field(default_factory=list)
    units: list[Unit] = field(default_factory=list)

    @classmethod
    def of(cls, windows: Iterable[WindowLike]) -> Aggregate:
        agg = cls()
        for w in windows:
            agg.add(w)
        return agg

    @classmethod
    def of_units(cls, units: Iterable[Unit]) -> Aggregate:
        agg = cls()
        for u in units:
            agg.windows += 1
            agg.frames += u.frames
            agg.detections += u.detections
            agg.low_confidence += u.low
            agg.units.append(u)
        return agg

    def add(self, w: WindowLike) -> None:
        self.windows += 1
        self.frames += w.frames
        self.detections += w.detections
        self.low_confidence += w.low_confidence
        self.units.append(Unit.of(w))
        self.latency_edges, self.latency_counts = _merge(
            self.latency_edges, self.latency_counts, w.latency_edges_ms, w.latency_counts
        )
        self.confidence_edges, self.confidence_counts = _merge(
            self.confidence_edges, self.confidence_counts, w.confidence_edges, w.confidence_counts
        )

    def during(self, start: datetime | None, end: datetime | None) -> Aggregate:
        """Only the windows overlapping [start, end]: control over the canary's windows."""
        if start is None or end is None:
            return self
        kept = [
            u
            for u in self.units
            if u.start is None or u.end is None or (u.end >= start and u.start <= end)
        ]
        return Aggregate.of_units(kept) if kept else self

    def with_strata(self, strata: Mapping[str, str] | None) -> Aggregate:
        """The same windows, each tagged with its device's stratum (match labels)."""
        if not strata:
            return self
        units = [dataclasses.replace(u, stratum=strata.get(u.device, "")) for u in self.units]
        return dataclasses.replace(self, units=units)

    @property
    def span(self) -> tuple[datetime | None, datetime | None]:
        starts = [u.start for u in self.units if u.start is not None]
        ends = [u.end for u in self.units if u.end is not None]
        return (min(starts) if starts else None, max(ends) if ends else None)


def _merge(
    edges: list[float], counts: list[int], new_edges: Sequence[float], new_counts: Sequence[int]
) -> tuple[list[float], list[int]]:
    if not counts:
        return list(new_edges), list(new_counts)
    if list(new_edges) != edges:  # other bins (an old agent): only the per-window tests see it
        return edges, counts
    return edges, [a + b for a, b in zip(counts, new_counts, strict=True)]


@dataclass(frozen=True)
class Installs:
    """Canary devices of this stage: how their installs of the version ended so far."""

    assigned: int
    committed: int
    failed: int  # reverted or failed
    # The canary devices' own fallback events since the stage began (a committed version
    # that would not load, so the device fell back to the one before): errors too.
    fallbacks: int = 0

    @property
    def finished(self) -> int:
        return self.committed + self.failed


@dataclass(frozen=True)
class GateResult:
    metric: str
    verdict: Verdict
    value: float | None
    threshold: float
    samples: int
    min_samples: int
    detail: str = ""
    kind: str = "sequential"  # hard | sequential | descriptive

    def to_dict(self) -> dict[str, object]:
        return {
            "metric": self.metric,
            "verdict": self.verdict.value,
            "value": self.value,
            "threshold": self.threshold,
            "samples": self.samples,
            "min_samples": self.min_samples,
            "detail": self.detail,
            "kind": self.kind,
        }


# --- the sequential test -----------------------------------------------------------------


@dataclass(frozen=True)
class Stat:
    """``excess``: how far past the threshold the estimate is, on the harmful side when
    positive (in units of ``scale``); ``var`` its variance."""

    value: float  # what is shown (e.g. the ratio)
    excess: float
    var: float
    scale: str  # key of TAU


def log_lr(t: Stat) -> float:
    """log of the normal-mixture likelihood ratio of "past the threshold" (mSPRT)."""
    tau2 = TAU[t.scale] ** 2
    v = max(t.var, 1e-12)
    return 0.5 * math.log(v / (v + tau2)) + tau2 * t.excess**2 / (2 * v * (v + tau2))


def crosses(t: Stat, alpha: float) -> bool:
    """Reject "harmless" when the estimate is past the threshold and the likelihood ratio
    reaches 1/alpha; by Ville's inequality this happens for a canary exactly at the
    threshold with probability <= alpha over any number of looks."""
    return t.excess > 0 and log_lr(t) >= math.log(1 / alpha)


@dataclass(frozen=True)
class _Ratio:
    """A ratio estimate sum(y)/sum(x) with its window-cluster variance, and the variance
    it would have if single events were independent (a floor)."""

    r: float
    var: float
    poisson_var: float


def _resid(units: Sequence[Unit], y: Getter, x: Getter, r: float) -> float:
    n = len(units)
    if n < 2:
        return 0.0
    return sum((y(u) - r * x(u)) ** 2 for u in units) * n / (n - 1)


def _by_stratum(units: Sequence[Unit]) -> dict[str, list[Unit]]:
    out: dict[str, list[Unit]] = {}
    for u in units:
        out.setdefault(u.stratum, []).append(u)
    return out


def _matched(
    canary: Aggregate, control: Aggregate, x: Getter
) -> list[tuple[list[Unit], list[Unit]]]:
    """(canary windows, control windows) per stratum that both arms have (matched on the
    rollout's labels, e.g. site); everything as one stratum when none is shared."""
    sc, sk = _by_stratum(canary.units), _by_stratum(control.units)
    common = [
        k for k in sorted(sc)
        if k in sk and sum(map(x, sc[k])) > 0 and sum(map(x, sk[k])) > 0
    ]  # fmt: skip
    if not common:
        return [(list(canary.units), list(control.units))]
    return [(sc[k], sk[k]) for k in common]


def _arms(
    canary: Aggregate, control: Aggregate, y: Getter, x: Getter, unit_var: Callable[[float], float]
) -> tuple[_Ratio, _Ratio, float] | None:
    """Canary ratio pooled over matched strata; control's per-stratum ratios weighted by the
    canary's share of ``x`` in each (post-stratified), so site differences cancel instead
    of inflating the variance. ``unit_var(r)``: variance of one event's ``y``."""
    pairs = _matched(canary, control, x)
    x_c = sum(sum(map(x, c)) for c, _ in pairs)
    n_c, n_k = sum(len(c) for c, _ in pairs), sum(len(k) for _, k in pairs)
    if x_c <= 0 or min(n_c, n_k) < 2:
        return None
    r_c = sum(sum(map(y, c)) for c, _ in pairs) / x_c
    var_c = pois_c = r_k = var_k = pois_k = 0.0
    for c, k in pairs:
        xc, xk = sum(map(x, c)), sum(map(x, k))
        if xc <= 0 or xk <= 0:
            continue
        rc, rk, w = sum(map(y, c)) / xc, sum(map(y, k)) / xk, xc / x_c
        var_c += _resid(c, y, x, rc) / x_c**2
        pois_c += unit_var(rc) * xc / x_c**2
        r_k += w * rk
        var_k += w**2 * _resid(k, y, x, rk) / xk**2
        pois_k += w**2 * unit_var(rk) / xk
    return _Ratio(r_c, var_c, pois_c), _Ratio(r_k, var_k, pois_k), x_c


def ratio_test(
    canary: _Ratio, control: _Ratio, threshold: float, x_canary: float, *, rate: bool
) -> Stat:
    """Canary / control against ``threshold`` (harm below it), relative to control:
    excess = (threshold * r_k - r_c) / r_k. A canary with no events (a dropped class) has
    no spread of its own, so its variance is floored at the Poisson variance it would have
    at the null (rate ``threshold * r_k``)."""
    r_c, r_k = canary.r, control.r
    floor_c = max(r_c, threshold * r_k) / x_canary if rate else canary.poisson_var
    var = max(canary.var, floor_c) + threshold**2 * max(control.var, control.poisson_var)
    return Stat(r_c / r_k, (threshold * r_k - r_c) / r_k, var / r_k**2, "ratio")


# --- the gates ---------------------------------------------------------------------------


def _result(
    gate: Gate, verdict: Verdict, value: float | None, samples: int, detail: str, *, kind: str
) -> GateResult:
    if value is not None and not math.isfinite(value):
        value = None
    return GateResult(
        gate.metric.value, verdict, value, gate.threshold, samples, gate.min_samples, detail, kind
    )


def _nodata(gate: Gate, samples: int, why: str) -> GateResult:
    kind = (
        "hard"
        if gate.metric in HARD
        else "descriptive"
        if gate.metric in DESCRIPTIVE
        else "sequential"
    )
    return _result(gate, Verdict.NODATA, None, samples, why, kind=kind)


def _hard(gate: Gate, value: float | None, samples: int) -> GateResult:
    if value is None or samples < gate.min_samples:
        return _nodata(gate, samples, f"{samples} of {gate.min_samples} installs finished")
    ok = value <= gate.threshold if DIRECTION[gate.metric] == "max" else value >= gate.threshold
    return _result(gate, Verdict.PASS if ok else Verdict.FAIL, value, samples, "", kind="hard")


def _sequential(gate: Gate, tests: dict[str, Stat], samples: int, alpha: float) -> GateResult:
    """One gate of one or more tests (one per class); the worst one is shown."""
    if not tests:
        why = (
            "no class with enough detections in both arms"
            if gate.metric in _PER_CLASS
            else ("too few usable windows in an arm")
        )
        return _nodata(gate, samples, why)
    each = alpha / len(tests)  # Bonferroni across classes
    worst_name = max(tests, key=lambda k: tests[k].excess)
    worst = tests[worst_name]
    failed = [k for k, t in tests.items() if crosses(t, each)]
    name = failed[0] if failed else worst_name
    shown = tests[name]
    label = f"{name}: " if name else ""
    if shown.excess > 0:  # the likelihood ratio only speaks on the harmful side
        lr = math.exp(min(log_lr(shown), 700.0))
        detail = f"{label}LR {lr:.3g} (fails at {1 / each:.3g})"
    else:
        detail = f"{label}on the good side of the threshold"
    value = shown.value if failed else worst.value
    if failed:
        verdict = Verdict.FAIL
    elif worst.excess > 0:
        # Past the threshold but not yet significant: not a pass. The stage stays open
        # (and may still fail) until the grace period ends, then a person decides.
        verdict, detail = Verdict.NODATA, f"leaning harmful, {detail}"
    else:
        verdict = Verdict.PASS
    return _result(gate, verdict, value, samples, detail, kind="sequential")


def _enough(gate: Gate, canary: Aggregate, control: Aggregate, samples: int) -> str | None:
    if min(canary.windows, control.windows) < gate.min_windows:
        return f"windows {canary.windows}/{control.windows} of {gate.min_windows} per arm"
    if samples < gate.min_samples:
        return f"{samples} of {gate.min_samples} samples per arm"
    return None


def _frames(u: Unit) -> float:
    return float(u.frames)


def _dets(u: Unit) -> float:
    return float(u.detections)


def _class_get(name: str, i: int) -> Getter:
    return lambda u: float(u.classes.get(name, (0, 0.0))[i])


def _detection_tests(gate: Gate, canary: Aggregate, control: Aggregate) -> dict[str, Stat]:
    if gate.metric is Metric.DETECTION_RATE_RATIO:
        ys: dict[str, Getter] = {"": _dets}
    else:
        ys = {
            k: _class_get(k, 0)
            for k in _classes(control)
            if sum(_class(control, k, 0)) >= gate.min_samples
        }
    out = {}
    for name, y in ys.items():
        arms = _arms(canary, control, y, _frames, lambda r: r)
        if arms and arms[1].r > 0:
            out[name] = ratio_test(arms[0], arms[1], gate.threshold, arms[2], rate=True)
    return out


def _classes(agg: Aggregate) -> list[str]:
    return sorted({k for u in agg.units for k in u.classes})


def _class(agg: Aggregate, name: str, i: int) -> list[float]:
    return [float(u.classes.get(name, (0, 0.0))[i]) for u in agg.units]


def _confidence_tests(gate: Gate, canary: Aggregate, control: Aggregate) -> dict[str, Stat]:
    if gate.metric is Metric.MEAN_CONFIDENCE_RATIO:
        yx: dict[str, tuple[Getter, Getter]] = {"": (lambda u: u.conf_sum, _dets)}
    else:
        yx = {
            k: (_class_get(k, 1), _class_get(k, 0))
            for k in _classes(control)
            if min(sum(_class(control, k, 0)), sum(_class(canary, k, 0))) >= gate.min_samples
        }
    # The spread of single confidences: the variance a mean of independent detections has.
    sd2 = max(_conf_sd(canary), _conf_sd(control)) ** 2
    out = {}
    for name, (y, x) in yx.items():
        arms = _arms(canary, control, y, x, lambda _r: sd2)
        if arms and arms[1].r > 0 and arms[0].r > 0:
            out[name] = ratio_test(arms[0], arms[1], gate.threshold, arms[2], rate=False)
    return out


def _conf_sd(agg: Aggregate) -> float:
    n = sum(u.detections for u in agg.units)
    if n < 2:
        return 0.0
    s, sq = sum(u.conf_sum for u in agg.units), sum(u.conf_sq for u in agg.units)
    return math.sqrt(max(sq / n - (s / n) ** 2, 0.0))


def _share_test(gate: Gate, canary: Aggregate, control: Aggregate) -> dict[str, Stat]:
    arms = _arms(canary, control, lambda u: float(u.low), _dets, lambda r: max(r * (1 - r), 0.01))
    if arms is None:
        return {}
    c, k, _ = arms
    var = max(c.var, c.poisson_var) + max(k.var, k.poisson_var)
    diff = c.r - k.r
    return {"": Stat(diff, diff - gate.threshold, var, "share")}


def _latency_test(gate: Gate, canary: Aggregate, control: Aggregate) -> dict[str, Stat]:
    """Mean log p95 of windows, canary minus control within matched strata, weighted by
    the canary's windows; the spread is pooled within strata (floored)."""
    timed = Aggregate.of_units(u for u in canary.units if u.log_p95 is not None)
    ref = Aggregate.of_units(u for u in control.units if u.log_p95 is not None)
    if min(timed.windows, ref.windows) < max(gate.min_windows, 2):
        return {}
    pairs = _matched(timed, ref, lambda u: 1.0)

    def p95(u: Unit) -> float:
        return u.log_p95 if u.log_p95 is not None else 0.0

    def pooled_var(groups: list[list[Unit]]) -> float:
        dev = sum(sum((p95(u) - _mean(g, p95)) ** 2 for u in g) for g in groups)
        dof = sum(len(g) for g in groups) - len(groups)
        return max(dev / dof if dof > 0 else 0.0, LATENCY_SD_FLOOR**2)

    s2_c, s2_k = pooled_var([c for c, _ in pairs]), pooled_var([k for _, k in pairs])
    n = sum(len(c) for c, _ in pairs)
    diff = var = 0.0
    for c, k in pairs:
        w = len(c) / n
        diff += w * (_mean(c, p95) - _mean(k, p95))
        var += w**2 * (s2_c / len(c) + s2_k / len(k))
    return {"": Stat(math.exp(diff), diff - math.log(gate.threshold), var, "log")}


def _mean(units: Sequence[Unit], f: Getter) -> float:
    return sum(map(f, units)) / len(units)


_TESTS: dict[Metric, Callable[[Gate, Aggregate, Aggregate], dict[str, Stat]]] = {
    Metric.DETECTION_RATE_RATIO: _detection_tests,
    Metric.CLASS_DETECTION_RATE_RATIO: _detection_tests,
    Metric.MEAN_CONFIDENCE_RATIO: _confidence_tests,
    Metric.CLASS_CONFIDENCE_RATIO: _confidence_tests,
    Metric.LOW_CONFIDENCE_SHARE: _share_test,
    Metric.P95_LATENCY_RATIO: _latency_test,
}
_PER_CLASS = (Metric.CLASS_DETECTION_RATE_RATIO, Metric.CLASS_CONFIDENCE_RATIO)
_FRAME_UNITS = (
    Metric.DETECTION_RATE_RATIO,
    Metric.CLASS_DETECTION_RATE_RATIO,
    Metric.P95_LATENCY_RATIO,
)


def card_gate(gate: Gate, cards: Cards | None) -> GateResult:
    """mAP50 of the production version's card minus the canary's, when both were built
    on labelled images (same count: the same validation set, as far as a card can tell).
    Deterministic and offline, so it is a hard gate: a drop past the threshold fails the
    rollout at its first tick, before any device is assigned."""
    c, p = (cards.canary, cards.production) if cards else (None, None)
    if c is None or p is None or c.map50 is None or p.map50 is None:
        missing = "no production version" if cards is None or p is None else "labels"
        why = f"needs labelled cards of both versions ({missing} missing)"
        return _result(gate, Verdict.SKIPPED, None, 0, why, kind="hard")
    if c.labelled_images != p.labelled_images:
        why = f"cards on different label sets ({c.labelled_images} vs {p.labelled_images})"
        return _result(gate, Verdict.SKIPPED, None, 0, why, kind="hard")
    drop = p.map50 - c.map50
    worst = max(
        ((k, v - c.ap50_per_class.get(k, 0.0)) for k, v in p.ap50_per_class.items()),
        key=lambda kv: kv[1],
        default=None,
    )
    detail = f"mAP50 {c.map50:.3f} vs {p.map50:.3f} ({p.version})"
    if worst is not None and worst[1] > 0:
        detail += f"; worst class {worst[0]} -{worst[1]:.3f}"
    verdict = Verdict.FAIL if drop > gate.threshold else Verdict.PASS
    return _result(gate, verdict, drop, c.labelled_images, detail, kind="hard")


def production_version(versions: Iterable[str | None], new: str) -> str | None:
    """The version most devices run that is not the rollout's (ties: the larger name)."""
    counts: dict[str, int] = {}
    for v in versions:
        if v and v != new:
            counts[v] = counts.get(v, 0) + 1
    return max(counts, key=lambda v: (counts[v], v)) if counts else None


def card_pair(
    find: Callable[[str, str], CardLike | None] | None,
    model: str,
    version: str,
    running: Iterable[tuple[str | None, str | None]],
) -> Cards | None:
    """The cards the card gate compares: ``find`` (the shell's card store) for the new
    version and for the production one, the version most of ``running`` (model, version
    of the selected devices) are on."""
    prod = production_version((v for m, v in running if m == model), version)
    if find is None:
        return None
    return Cards(find(model, version), find(model, prod) if prod else None)


def evaluate_gate(
    gate: Gate,
    canary: Aggregate,
    control: Aggregate,
    installs: Installs,
    baseline: Sequence[int] | None = None,
    *,
    alpha: float = DEFAULT_ALPHA,
    cards: Cards | None = None,
) -> GateResult:
    """One gate's value, evidence and verdict; ``alpha`` is this gate's share of the
    stage's false-alarm rate. ``baseline`` (confidence counts from the model card)
    replaces the control histogram for the descriptive PSI / JS."""
    m = gate.metric
    if m is Metric.CARD_MAP50_DROP:
        return card_gate(gate, cards)
    if m is Metric.INSTALL_SUCCESS_RATE:
        n = installs.finished
        return _hard(gate, installs.committed / n if n else None, n)
    if m is Metric.ERRORS:
        # Any finished install is a sample; one revert or fallback is enough to count.
        bad = installs.failed + installs.fallbacks
        return _hard(gate, float(bad), max(installs.finished, bad))
    if m in DESCRIPTIVE:
        return _descriptive(gate, canary, control, baseline)
    control = control.during(*canary.span)
    samples = (
        min(canary.frames, control.frames)
        if m in _FRAME_UNITS
        else min(canary.detections, control.detections)
    )
    short = _enough(gate, canary, control, samples)
    if short:
        return _nodata(gate, samples, short)
    return _sequential(gate, _TESTS[m](gate, canary, control), samples, alpha)


def _descriptive(
    gate: Gate, canary: Aggregate, control: Aggregate, baseline: Sequence[int] | None
) -> GateResult:
    m = gate.metric
    reference = list(baseline) if baseline is not None else control.confidence_counts
    n = min(canary.detections, sum(reference) if reference else 0)
    if n < max(gate.min_samples, 1) or len(reference) != len(canary.confidence_counts):
        return _nodata(gate, n, f"{n} of {gate.min_samples} detections")
    if m is Metric.PSI:
        value = psi(reference, canary.confidence_counts)
    elif m is Metric.JS:
        value = js_divergence(reference, canary.confidence_counts)
    else:
        value = mann_whitney_binned(canary.confidence_counts, control.confidence_counts).auc
    ok = value <= gate.threshold if DIRECTION[m] == "max" else value >= gate.threshold
    against = "model card baseline" if baseline is not None else "control"
    detail = f"vs {against}; descriptive, never stops a stage"
    return _result(gate, Verdict.PASS if ok else Verdict.WARN, value, n, detail, kind="descriptive")


def evaluate(
    gates: Sequence[Gate],
    canary: Aggregate,
    control: Aggregate,
    installs: Installs,
    baseline: Sequence[int] | None = None,
    *,
    alpha: float = DEFAULT_ALPHA,
    cards: Cards | None = None,
    strata: Mapping[str, str] | None = None,
) -> list[GateResult]:
    """Every gate; ``alpha`` (the stage's false-alarm rate) is split evenly over the
    sequential gates (Bonferroni), so all of them together over all looks stay under it.
    ``strata`` (device id -> its match labels) makes the comparison matched."""
    tested = sum(1 for g in gates if g.metric not in HARD | DESCRIPTIVE) or 1
    # Canary and control compared within the same match labels (device -> stratum).
    canary, control = canary.with_strata(strata), control.with_strata(strata)
    results = [
        evaluate_gate(g, canary, control, installs, baseline, alpha=alpha / tested, cards=cards)
        for g in gates
    ]
    # Install failures and fallbacks stop a stage even when no install gate was asked for.
    if (installs.failed or installs.fallbacks) and not any(
        g.metric is Metric.ERRORS for g in gates
    ):
        implicit = Gate(metric=Metric.ERRORS, threshold=0, min_samples=1)
        results.append(evaluate_gate(implicit, canary, control, installs))
    return results


def stage_outcome(results: Sequence[GateResult], *, soak_over: bool, grace_over: bool) -> Outcome:
    """Failed when a hard gate fails or a sequential test crosses (both valid at any look);
    after the soak Successful when every gate has its evidence and passed (WARN counts as
    passed), Inconclusive when something is still NODATA after the grace period."""
    if any(r.verdict is Verdict.FAIL for r in results):
        return Outcome.FAILED
    if not soak_over:
        return Outcome.PENDING
    if all(r.verdict in PASSING for r in results):
        return Outcome.SUCCESSFUL
    return Outcome.INCONCLUSIVE if grace_over else Outcome.PENDING


def failing(results: Sequence[GateResult]) -> list[str]:
    return [
        f"{r.metric} ({r.detail})" if r.detail else r.metric
        for r in results
        if r.verdict is Verdict.FAIL
    ]
