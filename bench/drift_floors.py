"""How often one look of a drift alert rule crosses ``fire_above`` when nothing changed: the
tables of docs/DRIFT.md, from the controller's own ``measure``. Independent frames and
detections (real video is correlated, so real rates are higher). A few seconds.

    .venv/bin/python bench/drift_floors.py [--trials 4000] [--seed 1]
"""

from __future__ import annotations

import argparse

import numpy as np
from edgefleet.controller.alerts.rules import Look, Rule, measure
from edgefleet.shared.histogram import CONFIDENCE_EDGES

CARD = [0] * 10 + [5, 10, 20, 40, 60, 80, 60, 40, 20, 5]  # 10 occupied bins of 20
BASE_FRAMES = 240  # a captured baseline: 6 windows of 40 frames


def psi_table(rng: np.random.Generator, trials: int) -> None:
    edges, p = list(CONFIDENCE_EDGES), np.array(CARD) / sum(CARD)
    card = Look(frames=50, detections=sum(CARD), counts=CARD)
    print("PSI against the card, looks drawn from the card; fire_above 0.25")
    for n in (20, 50, 100, 200, 400):
        rule = Rule(min_detections=n)
        v = np.array([measure(rule, Look(40, n, None, rng.multinomial(n, p).tolist()), card,
                              edges) for _ in range(trials)])  # fmt: skip
        print(f"  {n:4d} detections: median {np.median(v):.3f}  P(>=0.25) {(v >= 0.25).mean():.4f}")


def rate_table(rng: np.random.Generator, trials: int, rate: float = 2.29) -> None:
    print("detection_rate, Poisson detections, baseline of 240 frames; fire_above 0.5")
    for expected in (5, 10, 20, 40):
        frames = max(1, round(expected / rate))
        rule = Rule(metric="detection_rate", min_frames=1, min_expected=0)
        v = np.array([measure(rule, Look(frames, int(rng.poisson(rate * frames))),
                              Look(BASE_FRAMES, int(rng.poisson(rate * BASE_FRAMES))), [])
                      for _ in range(trials)])  # fmt: skip
        print(f"  {expected:3d} expected: P(>=0.5) {(v >= 0.5).mean():.4f}")


def empty_table(rng: np.random.Generator, trials: int) -> None:
    print("empty_share, binomial frames, baseline of 240 frames; fire_above 0.3")
    rule = Rule(metric="empty_share", fire_above=0.3, clear_below=0.1, min_frames=1,
                min_expected=0)  # fmt: skip
    for share in (0.1, 0.3, 0.5):
        for frames in (30, 40):
            v = np.array([measure(rule, Look(frames, 50, int(rng.binomial(frames, share))),
                                  Look(BASE_FRAMES, 500, int(rng.binomial(BASE_FRAMES, share))),
                                  []) for _ in range(trials)])  # fmt: skip
            print(f"  share {share:.1f}, {frames} frames: P(>=0.3) {(v >= 0.3).mean():.4f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    psi_table(rng, args.trials)
    rate_table(rng, args.trials)
    empty_table(rng, args.trials)


if __name__ == "__main__":
    main()
