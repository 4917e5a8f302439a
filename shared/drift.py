"""Drift between two fixed-bin histograms: PSI, Jensen-Shannon, Wasserstein-1, rank test.

Pure numpy on bin counts (the telemetry windows carry counts, never raw values), so the
same functions serve the controller's canary gates and the agent's own drift scores.
Python 3.10 compatible; no scipy at runtime (tests check these against scipy).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Counts = Sequence[int] | Sequence[float]
EPS = 1e-4  # probability floor for empty bins in PSI (log of zero otherwise)
# Counts added to every occupied bin on both sides for the drift numbers of windows against
# cards (shared/card.py drift_scores): the Jeffreys prior. Measured with the shipped v2 on
# models/samples (card built from them): windows of 5 and 6 consecutive frames of those
# images read PSI up to 0.95 and 0.47 with the EPS floor, up to 0.14 and 0.08 smoothed;
# the same windows at 60 % light read 0.71-1.01 smoothed (4.2-5.4 with the EPS floor).
DRIFT_PSEUDOCOUNT = 0.5


def _probs(counts: Counts) -> npt.NDArray[np.float64]:
    arr = np.asarray(counts, dtype=np.float64)
    if arr.ndim != 1 or (arr < 0).any():
        raise ValueError("histogram counts must be a flat list of non-negative numbers")
    total = arr.sum()
    if total <= 0:
        raise ValueError("histogram is empty")
    return arr / total  # type: ignore[no-any-return]


def _pair(a: Counts, b: Counts) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    if len(a) != len(b):
        raise ValueError(f"histograms differ in bins: {len(a)} vs {len(b)}")
    return _probs(a), _probs(b)


def psi(expected: Counts, actual: Counts, *, pseudocount: float | None = None) -> float:
    """Population stability index of ``actual`` against ``expected`` (0 = same).

    Without ``pseudocount``, empty bins are floored at :data:`EPS` so one empty bin does
    not make it infinite. Rule of thumb: < 0.1 stable, 0.1-0.25 moderate shift, > 0.25
    large shift.

    With ``pseudocount`` (counts, not shares, must be passed) each bin that holds anything
    on either side gets that many extra counts on both sides before normalising (0.5: the
    Jeffreys prior). The EPS floor turns a bin that a small window happens to miss into
    ``p * ln(p / EPS)``, 0.4 for a bin holding 1/16 of the reference; smoothing keeps a
    window of a few frames of unchanged scene near zero. See :data:`DRIFT_PSEUDOCOUNT`.
    """
    if pseudocount is None:
        p, q = _pair(expected, actual)
        p, q = np.maximum(p, EPS), np.maximum(q, EPS)
        return float(np.sum((q - p) * np.log(q / p)))
    _pair(expected, actual)  # the same checks: equal lengths, non-negative, not empty
    a = np.asarray(expected, dtype=np.float64)
    b = np.asarray(actual, dtype=np.float64)
    seen = (a + b) > 0
    p, q = a[seen] + pseudocount, b[seen] + pseudocount
    p, q = p / p.sum(), q / q.sum()
    return float(np.sum((q - p) * np.log(q / p)))


def js_divergence(a: Counts, b: Counts) -> float:
    """Jensen-Shannon divergence in bits (0 = same, 1 = disjoint)."""
    p, q = _pair(a, b)
    m = (p + q) / 2

    def kl(x: npt.NDArray[np.float64]) -> float:
        mask = x > 0
        return float(np.sum(x[mask] * np.log2(x[mask] / m[mask])))

    return max(0.0, (kl(p) + kl(q)) / 2)


def js_distance(a: Counts, b: Counts) -> float:
    """Square root of :func:`js_divergence` (a metric; what ``scipy`` calls jensenshannon)."""
    return math.sqrt(js_divergence(a, b))


def wasserstein1(
    a: Counts,
    b: Counts,
    edges: Sequence[float],
) -> float:
    """Earth mover's distance between two histograms, mass at the bin midpoints."""
    p, q = _pair(a, b)
    mids = _midpoints(edges, len(p))
    # 1-D: the integral of |CDF_p - CDF_q| between consecutive support points.
    cdf_gap = np.abs(np.cumsum(p) - np.cumsum(q))[:-1]
    return float(np.sum(cdf_gap * np.diff(mids)))


def _midpoints(edges: Sequence[float], bins: int) -> npt.NDArray[np.float64]:
    e = np.asarray(edges, dtype=np.float64)
    if len(e) != bins + 1:
        raise ValueError(f"{bins} bins need {bins + 1} edges, got {len(e)}")
    if not np.isfinite(e[-1]):  # an open last bin: put its mass at its lower edge
        e = e.copy()
        e[-1] = e[-2]
    mids: npt.NDArray[np.float64] = (e[:-1] + e[1:]) / 2
    return mids


@dataclass(frozen=True)
class RankTest:
    """Mann-Whitney U of sample ``a`` against ``b`` on binned values (ties = same bin).

    ``auc`` = U / (n_a * n_b): the chance a value of ``a`` beats one of ``b`` (ties count
    half); 0.5 means no shift, below 0.5 means ``a`` is lower. ``z`` is the normal
    approximation with the tie correction.
    """

    u: float
    auc: float
    z: float
    n_a: int
    n_b: int


def mann_whitney_binned(a_counts: Sequence[int], b_counts: Sequence[int]) -> RankTest:
    """U statistic of ``a`` over ``b`` where every value is its bin (midranks for ties)."""
    if len(a_counts) != len(b_counts):
        raise ValueError(f"histograms differ in bins: {len(a_counts)} vs {len(b_counts)}")
    a = np.asarray(a_counts, dtype=np.float64)
    b = np.asarray(b_counts, dtype=np.float64)
    n_a, n_b = int(a.sum()), int(b.sum())
    if n_a == 0 or n_b == 0:
        raise ValueError("rank test needs values on both sides")
    t = a + b
    below = np.concatenate(([0.0], np.cumsum(t)[:-1]))
    midrank = below + (t + 1) / 2  # average rank of the tied block in each bin
    u = float(np.sum(a * midrank) - n_a * (n_a + 1) / 2)
    n = n_a + n_b
    tie_term = float(np.sum(t**3 - t)) / (n * (n - 1)) if n > 1 else 0.0
    var = n_a * n_b / 12 * ((n + 1) - tie_term)
    z = (u - n_a * n_b / 2) / math.sqrt(var) if var > 0 else 0.0
    return RankTest(u=u, auc=u / (n_a * n_b), z=z, n_a=n_a, n_b=n_b)


def mean_from_counts(counts: Sequence[int], edges: Sequence[float]) -> float:
    """Mean of binned values at the bin midpoints (nan when empty)."""
    c = np.asarray(counts, dtype=np.float64)
    total = c.sum()
    if total <= 0:
        return float("nan")
    return float(np.sum(c * _midpoints(edges, len(c))) / total)
