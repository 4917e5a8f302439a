"""Shadow phase: the challenger runs beside the champion on a sample of live frames, before
the swap, and the two are compared. The champion keeps serving; the challenger's outputs are
only measured.

:func:`agreement` is pure: greedy one-to-one matching of boxes by IoU (most confident
champion detection first; among boxes overlapping enough, the same class first), then the
share of detections matched, their mean IoU and the share of matched pairs whose classes
agree. :class:`ShadowTap` is a pipeline sink that
copies every ``every``-th frame with the champion's detections; the reconcile thread runs
the challenger on those copies, never the frame loop.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from edgefleet.runtime.backend import Detection

if TYPE_CHECKING:
    from edgefleet.agent.pipeline import FrameResult

STOP_CHECK_S = 0.5  # seconds between looks at the stop flag


@dataclass(frozen=True)
class Agreement:
    frames: int
    champion: int  # detections
    challenger: int
    matched: int  # pairs with IoU >= the threshold
    mean_iou: float  # over matched pairs; 1.0 when neither found anything
    class_agreement: float  # matched pairs of the same class / matched pairs

    @property
    def match_rate(self) -> float:
        """Matched pairs over the larger of the two detection counts (1.0 if both empty)."""
        most = max(self.champion, self.challenger)
        return self.matched / most if most else 1.0

    def summary(self) -> str:
        return (
            f"shadow on {self.frames} frames: {self.match_rate:.0%} of boxes matched "
            f"(champion {self.champion}, challenger {self.challenger}), "
            f"mean IoU {self.mean_iou:.3f}, class agreement {self.class_agreement:.0%}"
        )


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _match(
    champ: Sequence[Detection], chall: Sequence[Detection], iou_min: float
) -> list[tuple[Detection, Detection, float]]:
    free = list(chall)
    pairs = []
    for d in sorted(champ, key=lambda d: -d.confidence):
        # Among the boxes that overlap enough, the same class first: a model that puts two
        # classes on one box (cross 0.45, star 0.31) must not have its cross paired with
        # its own star. Then the highest IoU, then the earliest (most confident) box.
        scored = [
            (c.class_id == d.class_id, overlap, -i)
            for i, c in enumerate(free)
            if (overlap := iou(d.box_xyxy, c.box_xyxy)) >= iou_min
        ]
        if scored:
            _, overlap, neg_i = max(scored)
            pairs.append((d, free.pop(-neg_i), overlap))
    return pairs


def agreement(
    frames: Sequence[tuple[Sequence[Detection], Sequence[Detection]]], iou_min: float = 0.5
) -> Agreement:
    """``frames``: (champion detections, challenger detections) per frame. Class
    agreement is over the matched pairs only: boxes one model missed count against the
    match rate, not against class agreement."""
    champion = challenger = 0
    pairs: list[tuple[Detection, Detection, float]] = []
    for champ, chall in frames:
        champion, challenger = champion + len(champ), challenger + len(chall)
        pairs += _match(champ, chall, iou_min)
    same = sum(a.class_id == b.class_id for a, b, _ in pairs)
    return Agreement(
        frames=len(frames),
        champion=champion,
        challenger=challenger,
        matched=len(pairs),
        mean_iou=float(np.mean([p[2] for p in pairs])) if pairs else (0.0 if champion else 1.0),
        class_agreement=same / len(pairs) if pairs else (0.0 if champion else 1.0),
    )


class ShadowTap:
    """A frame sink that, while armed, keeps copies of sampled frames and their results."""

    def __init__(self, every: int = 1) -> None:
        self.every = max(1, every)  # sample one frame in this many
        self._cond = threading.Condition()
        self._want = 0
        self._seen = 0
        self._got: list[tuple[npt.NDArray[np.uint8], list[Detection]]] = []

    def on_frame(self, result: FrameResult) -> None:
        frame = getattr(result, "frame", None)
        with self._cond:
            if len(self._got) >= self._want or frame is None or result.error:
                return
            self._seen += 1
            if self._seen % self.every:
                return
            self._got.append((frame.copy(), list(result.detections)))
            self._cond.notify_all()

    def on_drop(self, n: int) -> None:
        pass

    def collect(
        self, frames: int, timeout: float, stop: threading.Event
    ) -> list[tuple[npt.NDArray[np.uint8], list[Detection]]]:
        """Arm for ``frames`` sampled frames and wait for them (fewer on timeout or stop)."""
        with self._cond:
            self._want, self._seen, self._got = frames, 0, []
            left = timeout
            while len(self._got) < frames and left > 0 and not stop.is_set():
                step = min(STOP_CHECK_S, left)
                self._cond.wait(step)
                left -= step
            got, self._want = self._got, 0
            self._got = []
        return got


def run_shadow(
    tap: ShadowTap,
    challenger: Callable[[npt.NDArray[np.uint8]], list[Detection]],
    *,
    frames: int,
    timeout: float,
    stop: threading.Event,
) -> Agreement:
    """Sample live frames, run the challenger on them here, compare with the champion."""
    sampled = tap.collect(frames, timeout, stop)
    return agreement([(champ, challenger(frame)) for frame, champ in sampled])
