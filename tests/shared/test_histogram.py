from __future__ import annotations

import numpy as np
from edgefleet.shared.histogram import (
    CONFIDENCE_EDGES,
    LATENCY_EDGES_MS,
    OLD_LATENCY_EDGES_MS,
    bin_counts,
    merge_counts,
    quantile_from_counts,
    quantile_interpolated,
)


def test_bin_counts_matches_numpy_histogram() -> None:
    rng = np.random.default_rng(0)
    values = rng.uniform(0, 1, 1000)
    ours = bin_counts(values, CONFIDENCE_EDGES)
    ref, _ = np.histogram(values, bins=np.asarray(CONFIDENCE_EDGES))
    assert ours == ref.tolist()


def test_edges_are_inclusive_at_the_top_and_open_ended_for_latency() -> None:
    assert bin_counts([1.0], CONFIDENCE_EDGES)[-1] == 1
    assert bin_counts([100_000.0], LATENCY_EDGES_MS)[-1] == 1
    assert sum(bin_counts([], CONFIDENCE_EDGES)) == 0


def test_merge_and_quantile() -> None:
    a = bin_counts([2.5] * 90, LATENCY_EDGES_MS)
    b = bin_counts([40.0] * 10, LATENCY_EDGES_MS)
    m = merge_counts(a, b)
    assert sum(m) == 100
    # The upper edge of the bin: at most one log bin (9 %) above the value.
    assert 2.5 <= quantile_from_counts(m, LATENCY_EDGES_MS, 0.5) <= 2.5 * 2 ** (1 / 8)
    assert 40.0 <= quantile_from_counts(m, LATENCY_EDGES_MS, 0.95) <= 40.0 * 2 ** (1 / 8)
    old = bin_counts([2.5] * 90 + [40.0] * 10, OLD_LATENCY_EDGES_MS)
    assert quantile_from_counts(old, OLD_LATENCY_EDGES_MS, 0.95) == 50.0  # old bins still read


def test_log_bins_read_a_3x_latency_change_as_3x() -> None:
    """The old 150/250/500/1000 ms bins read 3x slower as 2x; the log bins do not."""
    rng = np.random.default_rng(1)
    for base in (12.0, 180.0, 400.0):
        fast = rng.lognormal(np.log(base), 0.2, 2000)
        p_fast, p_slow = (
            quantile_interpolated(bin_counts(v, LATENCY_EDGES_MS), LATENCY_EDGES_MS, 0.95)
            for v in (fast, 3 * fast)
        )
        assert abs(p_slow / p_fast - 3.0) < 0.15
        assert abs(p_fast / np.quantile(fast, 0.95) - 1.0) < 0.05
    assert quantile_interpolated([0, 0], [0.0, 1.0, 2.0], 0.5) != quantile_interpolated(
        [0, 0], [0.0, 1.0, 2.0], 0.5
    )  # nan when empty
