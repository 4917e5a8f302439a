from __future__ import annotations

import numpy as np
from edgefleet.shared.histogram import (
    CONFIDENCE_EDGES,
    LATENCY_EDGES_MS,
    bin_counts,
    merge_counts,
    quantile_from_counts,
)


def test_bin_counts_matches_numpy_histogram() -> None:
    rng = np.random.default_rng(0)
    values = rng.uniform(0, 1, 1000)
    ours = bin_counts(values, CONFIDENCE_EDGES)
    ref, _ = np.histogram(values, bins=np.asarray(CONFIDENCE_EDGES))
    assert ours == ref.tolist()


def test_edges_are_inclusive_at_the_top_and_open_ended_for_latency() -> None:
    assert bin_counts([1.0], CONFIDENCE_EDGES)[-1] == 1
    assert bin_counts([10_000.0], LATENCY_EDGES_MS)[-1] == 1
    assert sum(bin_counts([], CONFIDENCE_EDGES)) == 0


def test_merge_and_quantile() -> None:
    a = bin_counts([2.5] * 90, LATENCY_EDGES_MS)
    b = bin_counts([40.0] * 10, LATENCY_EDGES_MS)
    m = merge_counts(a, b)
    assert sum(m) == 100
    assert quantile_from_counts(m, LATENCY_EDGES_MS, 0.5) == 3.0
    assert quantile_from_counts(m, LATENCY_EDGES_MS, 0.95) == 50.0
