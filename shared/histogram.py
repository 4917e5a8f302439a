"""Fixed-bin histograms, so windows from many devices add up bin by bin."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

# 20 equal bins over [0, 1]: confidences.
CONFIDENCE_EDGES: tuple[float, ...] = tuple(round(i / 20, 2) for i in range(21))
# Latency bin edges in milliseconds, log-spaced: 8 bins per doubling from 0.1 ms to past 60 s,
# so a bin is 9 % wide and a quantile read from it is within about 4.5 % of the true value
# (the old 150/250/500/1000 ms bins could only tell ratios 1, 2, 4 apart). Finite, because
# JSON has no infinity: anything slower than the last edge lands in the last bin. Windows
# carry their own edges, so windows on the old layout (OLD_LATENCY_EDGES_MS) still decode.
LATENCY_BINS_PER_DOUBLING = 8
LATENCY_EDGES_MS: tuple[float, ...] = (
    0.0,
    *(float(f"{0.1 * 2 ** (k / LATENCY_BINS_PER_DOUBLING):.4g}") for k in range(155)),
)
OLD_LATENCY_EDGES_MS: tuple[float, ...] = (
    0.0, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 50.0, 75.0, 100.0, 150.0,
    250.0, 500.0, 1000.0, 60000.0,
)  # fmt: skip


def bin_counts(values: Iterable[float], edges: Sequence[float]) -> list[int]:
    """Counts of ``values`` in the bins ``[edges[i], edges[i+1])``; the last bin is closed."""
    arr = np.fromiter(values, dtype=np.float64)
    finite_edges = np.asarray(edges, dtype=np.float64)
    idx = np.searchsorted(finite_edges, arr, side="right") - 1
    idx = np.clip(idx, 0, len(edges) - 2)
    return [int(c) for c in np.bincount(idx, minlength=len(edges) - 1)]


def merge_counts(a: Sequence[int], b: Sequence[int]) -> list[int]:
    if len(a) != len(b):
        raise ValueError(f"histograms differ in bins: {len(a)} vs {len(b)}")
    return [x + y for x, y in zip(a, b, strict=True)]


def quantile_from_counts(counts: Sequence[int], edges: Sequence[float], q: float) -> float:
    """Upper edge of the bin holding quantile ``q`` (a conservative estimate)."""
    total = sum(counts)
    if total == 0:
        return float("nan")
    target = q * total
    running = 0
    for i, c in enumerate(counts):
        running += c
        if running >= target:
            upper = edges[i + 1]
            return float(edges[i]) if upper == float("inf") else float(upper)
    return float(edges[-2])


def quantile_interpolated(counts: Sequence[int], edges: Sequence[float], q: float) -> float:
    """Quantile ``q`` read inside its bin: geometric interpolation between the bin's edges
    (linear when the lower edge is 0), so fine log-spaced bins give a near-exact value and
    coarse old-layout bins an unbiased one rather than their upper edge. nan when empty."""
    total = sum(counts)
    if total == 0:
        return float("nan")
    target = q * total
    running = 0.0
    for i, c in enumerate(counts):
        if c and running + c >= target:
            lo, hi = float(edges[i]), float(edges[i + 1])
            if i == len(counts) - 1:  # the overflow bin: all we know is "at least lo"
                return lo
            frac = min(max((target - running) / c, 0.0), 1.0)
            return lo + frac * (hi - lo) if lo <= 0 else lo * (hi / lo) ** frac
        running += c
    return float(edges[-2])
