"""Drift math on histograms, checked against scipy (a test-only dependency)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from edgefleet.shared.drift import (
    js_distance,
    js_divergence,
    mann_whitney_binned,
    mean_from_counts,
    psi,
    wasserstein1,
)
from edgefleet.shared.histogram import CONFIDENCE_EDGES

stats = pytest.importorskip("scipy.stats")
spatial = pytest.importorskip("scipy.spatial.distance")

EDGES = np.asarray(CONFIDENCE_EDGES)
MIDS = (EDGES[:-1] + EDGES[1:]) / 2


def _hist(rng: np.random.Generator, a: float, b: float, n: int) -> list[int]:
    values = rng.beta(a, b, n)
    return [int(c) for c in np.histogram(values, bins=EDGES)[0]]


@pytest.fixture
def pair() -> tuple[list[int], list[int]]:
    rng = np.random.default_rng(7)
    return _hist(rng, 5, 2, 800), _hist(rng, 3, 3, 500)


def test_js_matches_scipy(pair: tuple[list[int], list[int]]) -> None:
    a, b = pair
    assert js_distance(a, b) == pytest.approx(spatial.jensenshannon(a, b, base=2), abs=1e-12)
    assert js_divergence(a, a) == pytest.approx(0.0, abs=1e-12)
    assert js_divergence([1, 0], [0, 1]) == pytest.approx(1.0)


def test_wasserstein_matches_scipy(pair: tuple[list[int], list[int]]) -> None:
    a, b = pair
    want = stats.wasserstein_distance(MIDS, MIDS, u_weights=a, v_weights=b)
    assert wasserstein1(a, b, CONFIDENCE_EDGES) == pytest.approx(want, abs=1e-12)


def test_psi_by_hand_and_properties(pair: tuple[list[int], list[int]]) -> None:
    a, b = pair
    p = np.maximum(np.asarray(a) / sum(a), 1e-4)
    q = np.maximum(np.asarray(b) / sum(b), 1e-4)
    assert psi(a, b) == pytest.approx(float(np.sum((q - p) * np.log(q / p))))
    assert psi(a, a) == 0.0
    assert psi(a, b) == pytest.approx(psi(b, a))  # symmetric by construction
    assert psi(a, b) > 0.1  # these two really differ


def test_mann_whitney_matches_scipy_on_binned_values(pair: tuple[list[int], list[int]]) -> None:
    a, b = pair
    xs, ys = np.repeat(MIDS, a), np.repeat(MIDS, b)
    ref = stats.mannwhitneyu(xs, ys, alternative="two-sided", method="asymptotic",
                             use_continuity=False)  # fmt: skip
    got = mann_whitney_binned(a, b)
    assert got.u == pytest.approx(ref.statistic)
    # Two-sided p from our z equals scipy's (same tie correction, no continuity).
    p = math.erfc(abs(got.z) / math.sqrt(2))
    assert p == pytest.approx(ref.pvalue, rel=1e-9)
    assert got.auc > 0.5  # a (beta 5,2) sits higher than b (beta 3,3)


def test_mean_and_errors() -> None:
    assert mean_from_counts([0, 2, 0, 2], [0, 1, 2, 3, 4]) == pytest.approx(2.5)
    assert math.isnan(mean_from_counts([0, 0], [0, 1, 2]))
    with pytest.raises(ValueError, match="empty"):
        psi([0, 0], [1, 1])
    with pytest.raises(ValueError, match="bins"):
        js_divergence([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="both sides"):
        mann_whitney_binned([0, 0], [1, 0])


def test_smoothed_psi_by_hand_and_a_missed_bin() -> None:
    """What the drift numbers use: half a count more in every occupied bin, both sides."""
    ref = [0, 0, 5, 2, 0, 3, 1, 1, 1, 2, 1, 0]  # a card of 16 detections (v2, samples)
    win = [0, 0, 5, 2, 0, 3, 0, 1, 1, 2, 1, 0]  # a short window that missed one bin
    a, b = np.asarray(ref, float), np.asarray(win, float)
    seen = (a + b) > 0
    p = (a[seen] + 0.5) / (a[seen] + 0.5).sum()
    q = (b[seen] + 0.5) / (b[seen] + 0.5).sum()
    want = float(np.sum((q - p) * np.log(q / p)))
    assert psi(ref, win, pseudocount=0.5) == pytest.approx(want, abs=1e-12)
    assert psi(ref, ref, pseudocount=0.5) == 0.0
    # The EPS floor reads the one missed detection as a large shift; smoothed it is small.
    assert psi(ref, win) > 0.3 > 0.1 > psi(ref, win, pseudocount=0.5)
    with pytest.raises(ValueError, match="empty"):
        psi(ref, [0] * len(ref), pseudocount=0.5)
