"""mAP at IoU 0.5 in numpy, the way Ultralytics' ``val`` computes it (101-point AP)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

IOU = 0.5
F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Box:
    class_id: int
    xyxy: tuple[float, float, float, float]
    confidence: float = 1.0


def iou_matrix(a: F64, b: F64) -> F64:
    """IoU of every box in ``a`` (N, 4) with every box in ``b`` (M, 4), xyxy."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area_a = (a[:, 2:] - a[:, :2]).prod(axis=1)
    area_b = (b[:, 2:] - b[:, :2]).prod(axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def match_image(preds: Sequence[Box], truth: Sequence[Box]) -> list[tuple[int, float, bool]]:
    """(class, confidence, true positive) per prediction: greedy by confidence, same class."""
    order = sorted(range(len(preds)), key=lambda i: -preds[i].confidence)
    used: set[int] = set()
    if truth and preds:
        ious = iou_matrix(
            np.array([p.xyxy for p in preds], np.float64), np.array([t.xyxy for t in truth])
        )
    out = []
    for i in order:
        p, best, best_j = preds[i], IOU, -1
        for j, t in enumerate(truth):
            if j not in used and t.class_id == p.class_id and ious[i, j] >= best:
                best, best_j = float(ious[i, j]), j
        if best_j >= 0:
            used.add(best_j)
        out.append((p.class_id, p.confidence, best_j >= 0))
    return out


def average_precision(tp: Sequence[bool], conf: Sequence[float], n_truth: int) -> float:
    """Area under the interpolated precision-recall curve, 101 recall points (COCO)."""
    if n_truth == 0:
        return float("nan")
    if not tp:
        return 0.0  # nothing predicted for a class that is there
    order = np.argsort(-np.asarray(conf, np.float64), kind="stable")
    hits = np.asarray(tp, np.float64)[order]
    return ranked_ap(hits, np.ones_like(hits), float(n_truth))


def ranked_ap(hits: F64, weights: F64, n_truth: float) -> float:
    """AP50 of predictions already ranked by confidence (highest first), each counted
    ``weights`` times: the paired bootstrap (controller/validation_gate.py) draws images
    with replacement, and a prediction of an image drawn twice counts twice."""
    if n_truth <= 0:
        return float("nan")
    if not hits.size:
        return 0.0
    tpc, fpc = np.cumsum(hits * weights), np.cumsum((1 - hits) * weights)
    recall = np.concatenate(([0.0], tpc / n_truth, [1.0]))
    precision = np.concatenate(([1.0], tpc / np.maximum(tpc + fpc, 1e-16), [0.0]))
    envelope = np.flip(np.maximum.accumulate(np.flip(precision)))
    x = np.linspace(0, 1, 101)
    y = np.interp(x, recall, envelope)
    # the trapezoid rule as np.trapezoid computes it (numpy < 2 names that np.trapz)
    return float((np.diff(x) * (y[1:] + y[:-1]) / 2.0).sum())


def map50(
    images: Sequence[tuple[Sequence[Box], Sequence[Box]]],
) -> tuple[float | None, dict[int, float]]:
    """``images``: (predictions, ground truth) per image -> (mAP50, AP50 per class)."""
    records: list[tuple[int, float, bool]] = []
    n_truth: dict[int, int] = {}
    for preds, truth in images:
        records.extend(match_image(preds, truth))
        for t in truth:
            n_truth[t.class_id] = n_truth.get(t.class_id, 0) + 1
    per_class = {}
    for cls, n in sorted(n_truth.items()):
        mine = [(c, hit) for k, c, hit in records if k == cls]
        per_class[cls] = average_precision([h for _, h in mine], [c for c, _ in mine], n)
    if not per_class:
        return None, {}
    return float(np.mean(list(per_class.values()))), per_class
