"""The validation gate at push: does a candidate version meet its model's policy?

Pure: :func:`judge` takes the policy, the candidate's :class:`Evaluation` on the policy's
registered validation set and, when there is one, the production version's evaluation on
the same set; it does no I/O (controller/validation_run.py evaluates, and
controller/validation_registry.py reads and writes the database).

Checks, each one a reason when it fails:

* evidence: the set has at least ``min_images`` labelled images;
* ``min_map50``: the candidate's mAP50 on the set;
* ``max_regression``: production's mAP50 minus the candidate's (same images);
* ``max_class_regression``: the same per class, for classes with at least
  ``min_class_instances`` labelled objects (a class with fewer is listed, not judged);
* ``latency_budget_ms``: the candidate's median latency on the reference profile.

The decision uses the point estimates (what ``model show`` prints). mAP50 on a finite set
has sampling noise, so the regression also carries a paired bootstrap interval
(:func:`regression_interval`: the same resampled images for both models) that says how far
the difference could move on another draw of images of the same kind.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from edgefleet.controller.map50 import ranked_ap
from pydantic import BaseModel, ConfigDict, Field

BOOTSTRAP_DRAWS = 500
BOOTSTRAP_SEED = 0  # the interval of a pair of evaluations is the same on every run
INTERVAL = 0.90  # two-sided


class GatePolicy(BaseModel):
    """What a model's versions must meet; a limit left None is not checked."""

    model_config = ConfigDict(extra="forbid")
    dataset: str = Field(min_length=1, max_length=64)
    min_map50: float | None = Field(default=None, ge=0, le=1)
    max_regression: float | None = Field(default=None, ge=0, le=1)  # mAP50 points
    max_class_regression: float | None = Field(default=None, ge=0, le=1)  # AP50 points
    latency_budget_ms: float | None = Field(default=None, gt=0)  # median, reference profile
    min_images: int = Field(default=50, ge=1)  # labelled images the set must have
    min_class_instances: int = Field(default=20, ge=1)  # objects to judge a class alone


class ClassRecords(BaseModel):
    """One class's predictions on the set, ranked by confidence (highest first): the
    labelled image each came from and whether it matched an object (IoU >= 0.5); and the
    class's labelled objects per image. Enough to recompute AP50 on any resample."""

    image: list[int]
    hit: list[bool]
    truth: list[int]


class Evaluation(BaseModel):
    """One model's run over one registered validation set."""

    model_sha256: str
    dataset_digest: str
    images: int
    labelled: int
    map50: float | None
    ap50: dict[str, float]  # class name -> AP50 (classes with labelled objects)
    instances: dict[str, int]  # class name -> labelled objects
    latency_p50_ms: float
    latency_p90_ms: float
    profile: str  # the reference profile the latency was measured on
    classes: dict[str, ClassRecords] = Field(default_factory=dict, repr=False)

    def summary(self) -> dict[str, object]:
        """What the version keeps (the records stay in the evaluation cache)."""
        return self.model_dump(mode="json", exclude={"classes"})


class Check(BaseModel):
    check: str  # evidence | min_map50 | max_regression | max_class_regression | latency
    passed: bool
    value: float | None
    limit: float
    detail: str


class GateResult(BaseModel):
    status: Literal["accepted", "rejected"]
    reasons: list[str]
    checks: list[Check]
    not_judged: list[str]  # classes with too few objects for their own check
    dataset: str
    dataset_digest: str
    production: str | None  # the version compared against, None when there is none
    regression_interval: tuple[float, float] | None  # 90 % paired bootstrap, mAP50 points
    candidate: dict[str, object]
    baseline: dict[str, object] | None


@dataclass(frozen=True)
class Production:
    version: str
    evaluation: Evaluation


def judge(policy: GatePolicy, candidate: Evaluation, production: Production | None) -> GateResult:
    checks = [_evidence(policy, candidate)]
    if policy.min_map50 is not None:
        value = candidate.map50 or 0.0
        checks.append(
            Check(
                check="min_map50",
                passed=value >= policy.min_map50,
                value=value,
                limit=policy.min_map50,
                detail=f"mAP50 {value:.3f} (minimum {policy.min_map50:.3f})",
            )
        )
    not_judged: list[str] = []
    interval = None
    if production is not None:
        checks.extend(_regressions(policy, candidate, production, not_judged))
        interval = regression_interval(production.evaluation, candidate)
    if policy.latency_budget_ms is not None:
        ms = candidate.latency_p50_ms
        checks.append(
            Check(
                check="latency",
                passed=ms <= policy.latency_budget_ms,
                value=ms,
                limit=policy.latency_budget_ms,
                detail=f"median latency {ms:.1f} ms on {candidate.profile} "
                f"(budget {policy.latency_budget_ms:g} ms)",
            )
        )
    reasons = [c.detail for c in checks if not c.passed]
    return GateResult(
        status="rejected" if reasons else "accepted",
        reasons=reasons,
        checks=checks,
        not_judged=not_judged,
        dataset=policy.dataset,
        dataset_digest=candidate.dataset_digest,
        production=production.version if production else None,
        regression_interval=interval,
        candidate=candidate.summary(),
        baseline=production.evaluation.summary() if production else None,
    )


def _evidence(policy: GatePolicy, candidate: Evaluation) -> Check:
    n = candidate.labelled
    return Check(
        check="evidence",
        passed=n >= policy.min_images,
        value=float(n),
        limit=float(policy.min_images),
        detail=f"{n} labelled validation images (the policy needs {policy.min_images})",
    )


def _regressions(
    policy: GatePolicy, candidate: Evaluation, production: Production, not_judged: list[str]
) -> list[Check]:
    base, label = production.evaluation, production.version
    out = []
    if policy.max_regression is not None:
        drop = (base.map50 or 0.0) - (candidate.map50 or 0.0)
        out.append(
            Check(
                check="max_regression",
                passed=drop <= policy.max_regression,
                value=drop,
                limit=policy.max_regression,
                detail=f"mAP50 {candidate.map50 or 0.0:.3f} is {drop:.3f} below "
                f"production {label}'s {base.map50 or 0.0:.3f} (allowed "
                f"{policy.max_regression:.3f})",
            )
        )
    if policy.max_class_regression is None:
        return out
    for cls, base_ap in sorted(base.ap50.items()):
        n = base.instances.get(cls, 0)
        if n < policy.min_class_instances:
            not_judged.append(f"{cls} ({n} objects < {policy.min_class_instances})")
            continue
        ap = candidate.ap50.get(cls, 0.0)
        drop = base_ap - ap
        out.append(
            Check(
                check="max_class_regression",
                passed=drop <= policy.max_class_regression,
                value=drop,
                limit=policy.max_class_regression,
                detail=f"class {cls!r} AP50 {ap:.3f} is {drop:.3f} below production "
                f"{label}'s {base_ap:.3f} (allowed "
                f"{policy.max_class_regression:.3f})",
            )
        )
    return out


# --- the paired bootstrap of the mAP50 difference ------------------------------------------


def _ranked(records: ClassRecords) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float64]]:
    return np.asarray(records.image, np.intp), np.asarray(records.hit, np.float64)


def resampled_map50(evaluation: Evaluation, counts: npt.NDArray[np.float64]) -> float:
    """mAP50 on the labelled images drawn ``counts[i]`` times each."""
    aps = []
    for records in evaluation.classes.values():
        truth = float(np.dot(counts, np.asarray(records.truth, np.float64)))
        if truth <= 0:
            continue
        image, hit = _ranked(records)
        aps.append(ranked_ap(hit, counts[image], truth))
    return float(np.mean(aps)) if aps else 0.0


def regression_interval(
    production: Evaluation, candidate: Evaluation, draws: int = BOOTSTRAP_DRAWS
) -> tuple[float, float] | None:
    """A 90 % interval of (production - candidate) mAP50 over image resamples: both models
    on the same drawn images. None when the two were not run on the same labelled images."""
    n = candidate.labelled
    if n == 0 or production.labelled != n or not candidate.classes or not production.classes:
        return None
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    diffs = np.empty(draws)
    for i in range(draws):
        counts = np.bincount(rng.integers(0, n, n), minlength=n).astype(np.float64)
        diffs[i] = resampled_map50(production, counts) - resampled_map50(candidate, counts)
    tail = (1 - INTERVAL) / 2 * 100
    low, high = np.percentile(diffs, [tail, 100 - tail])
    if not (math.isfinite(low) and math.isfinite(high)):
        return None
    return round(float(low), 4), round(float(high), 4)
