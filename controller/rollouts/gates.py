"""Canary gates: canary against control over the same telemetry windows (pure).

The judgement follows Kayenta / Argo Rollouts: every gate has a threshold and a minimum
sample size; too few samples is NODATA, never a pass; a stage is Failed as soon as one
gate fails, Successful when every gate passes once the soak is over, and Inconclusive
(a person decides) when data is still missing after the grace period.

Inputs are plain numbers and histograms; no database, no clock.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

from edgefleet.controller.rollouts.spec import DIRECTION, Gate, Metric
from edgefleet.shared.drift import js_divergence, mann_whitney_binned, mean_from_counts, psi
from edgefleet.shared.histogram import quantile_from_counts


class Verdict(str, Enum):
    PASS = "PASS"  # noqa: S105 - a verdict, not a password
    FAIL = "FAIL"
    NODATA = "NODATA"


class Outcome(str, Enum):
    PENDING = "pending"  # soak not over, nothing failed
    SUCCESSFUL = "successful"
    FAILED = "failed"
    INCONCLUSIVE = "inconclusive"


class WindowLike(Protocol):
    """What gates read from a telemetry window (protocol.TelemetryWindow, the DB row)."""

    frames: int
    latency_edges_ms: list[float]
    latency_counts: list[int]
    confidence_edges: list[float]
    confidence_counts: list[int]
    detections: int
    low_confidence: int


@dataclass
class Aggregate:
    """Windows of one group added bin by bin."""

    windows: int = 0
    frames: int = 0
    detections: int = 0
    low_confidence: int = 0
    latency_edges: list[float] = field(default_factory=list)
    latency_counts: list[int] = field(default_factory=list)
    confidence_edges: list[float] = field(default_factory=list)
    confidence_counts: list[int] = field(default_factory=list)

    @classmethod
    def of(cls, windows: Iterable[WindowLike]) -> Aggregate:
        agg = cls()
        for w in windows:
            agg.add(w)
        return agg

    def add(self, w: WindowLike) -> None:
        self.windows += 1
        self.frames += w.frames
        self.detections += w.detections
        self.low_confidence += w.low_confidence
        self.latency_edges, self.latency_counts = _merge(
            self.latency_edges, self.latency_counts, w.latency_edges_ms, w.latency_counts
        )
        self.confidence_edges, self.confidence_counts = _merge(
            self.confidence_edges, self.confidence_counts, w.confidence_edges, w.confidence_counts
        )


def _merge(
    edges: list[float], counts: list[int], new_edges: Sequence[float], new_counts: Sequence[int]
) -> tuple[list[float], list[int]]:
    if not counts:
        return list(new_edges), list(new_counts)
    if list(new_edges) != edges:  # a window with other bins cannot be added; skip it
        return edges, counts
    return edges, [a + b for a, b in zip(counts, new_counts, strict=True)]


@dataclass(frozen=True)
class Installs:
    """Canary devices of this stage: how their installs of the version ended so far."""

    assigned: int
    committed: int
    failed: int  # reverted or failed

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

    def to_dict(self) -> dict[str, object]:
        return {
            "metric": self.metric,
            "verdict": self.verdict.value,
            "value": self.value,
            "threshold": self.threshold,
            "samples": self.samples,
            "min_samples": self.min_samples,
            "detail": self.detail,
        }


def _judge(gate: Gate, value: float | None, samples: int, detail: str = "") -> GateResult:
    ok: bool | None = None
    if value is not None and math.isfinite(value) and samples >= gate.min_samples:
        ok = value <= gate.threshold if DIRECTION[gate.metric] == "max" else value >= gate.threshold
    verdict = Verdict.NODATA if ok is None else (Verdict.PASS if ok else Verdict.FAIL)
    if verdict is Verdict.NODATA and value is not None and not math.isfinite(value):
        value = None
    return GateResult(
        gate.metric.value, verdict, value, gate.threshold, samples, gate.min_samples, detail
    )


def _ratio(a: float, b: float) -> float | None:
    if math.isnan(a) or math.isnan(b) or b == 0:
        return None
    return a / b


def evaluate_gate(
    gate: Gate,
    canary: Aggregate,
    control: Aggregate,
    installs: Installs,
    baseline: Sequence[int] | None = None,
) -> GateResult:
    """One gate's value, sample count and verdict. ``baseline`` (confidence counts from the
    model card) replaces the control histogram for PSI / JS when given."""
    m = gate.metric
    if m is Metric.INSTALL_SUCCESS_RATE:
        n = installs.finished
        return _judge(gate, installs.committed / n if n else None, n)
    if m is Metric.ERRORS:
        # Any finished install is a sample; one revert is enough to count.
        return _judge(gate, float(installs.failed), max(installs.finished, installs.failed))
    if m in (Metric.P95_LATENCY_RATIO, Metric.DETECTION_RATE_RATIO):
        return _frame_gate(gate, canary, control)
    return _confidence_gate(gate, canary, control, baseline)


def _frame_gate(gate: Gate, canary: Aggregate, control: Aggregate) -> GateResult:
    n = min(canary.frames, control.frames)
    if not n:
        return _judge(gate, None, 0)
    if gate.metric is Metric.P95_LATENCY_RATIO:
        p_c = quantile_from_counts(canary.latency_counts, canary.latency_edges, 0.95)
        p_k = quantile_from_counts(control.latency_counts, control.latency_edges, 0.95)
        return _judge(gate, _ratio(p_c, p_k), n, f"p95 {p_c:g} ms vs {p_k:g} ms")
    # A model that sees worse also sees less: its confidences fall under the cut.
    a, b = canary.detections / canary.frames, control.detections / control.frames
    return _judge(gate, _ratio(a, b), n, f"{a:.2f} vs {b:.2f} per frame")


def _confidence_gate(
    gate: Gate, canary: Aggregate, control: Aggregate, baseline: Sequence[int] | None
) -> GateResult:
    m = gate.metric
    reference = list(baseline) if baseline is not None else control.confidence_counts
    ref_n = sum(reference) if reference else 0
    n = min(canary.detections, ref_n if m in (Metric.PSI, Metric.JS) else control.detections)
    if not n or not canary.confidence_counts or len(reference) != len(canary.confidence_counts):
        return _judge(gate, None, 0)
    edges = canary.confidence_edges
    if m is Metric.MEAN_CONFIDENCE_RATIO:
        a = mean_from_counts(canary.confidence_counts, edges)
        b = mean_from_counts(control.confidence_counts, edges)
        return _judge(gate, _ratio(a, b), n, f"mean {a:.3f} vs {b:.3f}")
    if m is Metric.PSI:
        return _judge(gate, psi(reference, canary.confidence_counts), n, _against(baseline))
    if m is Metric.JS:
        value = js_divergence(reference, canary.confidence_counts)
        return _judge(gate, value, n, _against(baseline))
    if m is Metric.LOW_CONFIDENCE_SHARE:
        share = canary.low_confidence / canary.detections
        ref_share = control.low_confidence / control.detections
        return _judge(gate, share - ref_share, n, f"share {share:.2f} vs {ref_share:.2f}")
    rank = mann_whitney_binned(canary.confidence_counts, control.confidence_counts)
    return _judge(gate, rank.auc, n, f"U={rank.u:g} z={rank.z:.2f}")


def _against(baseline: Sequence[int] | None) -> str:
    return "vs model card baseline" if baseline is not None else "vs control"


def evaluate(
    gates: Sequence[Gate],
    canary: Aggregate,
    control: Aggregate,
    installs: Installs,
    baseline: Sequence[int] | None = None,
) -> list[GateResult]:
    results = [evaluate_gate(g, canary, control, installs, baseline) for g in gates]
    # Install failures stop a stage even when no install gate was asked for.
    if installs.failed and not any(g.metric is Metric.ERRORS for g in gates):
        implicit = Gate(metric=Metric.ERRORS, threshold=0, min_samples=1)
        results.append(evaluate_gate(implicit, canary, control, installs))
    return results


def stage_outcome(results: Sequence[GateResult], *, soak_over: bool, grace_over: bool) -> Outcome:
    """Failed at the first failing gate; after the soak Successful when all pass,
    Inconclusive when something is still NODATA after the grace period."""
    if any(r.verdict is Verdict.FAIL for r in results):
        return Outcome.FAILED
    if not soak_over:
        return Outcome.PENDING
    if all(r.verdict is Verdict.PASS for r in results):
        return Outcome.SUCCESSFUL
    return Outcome.INCONCLUSIVE if grace_over else Outcome.PENDING


def failing(results: Sequence[GateResult]) -> list[str]:
    return [r.metric for r in results if r.verdict is Verdict.FAIL]
