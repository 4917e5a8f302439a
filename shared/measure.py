"""The one confidence measurement: what a model card and an agent's telemetry window count.

A device looking at the images its card was built from must read no drift, so both sides
run this code, not two copies of it:

* the **candidates** are every box the detector decoded (the card decodes at conf 0.001
  for mAP; the agent at its candidate floor, and its kept detections plus the candidates
  below its own cut are passed in together);
* the **threshold** is :data:`MEASURE_CONF`, fixed, whatever score cut a device's
  application uses (``conf`` in the agent config): a scored box counts when its
  confidence is strictly above it;
* the **bins** are :data:`~edgefleet.shared.histogram.CONFIDENCE_EDGES`, overall and per
  class name.

Why the decode floor does not matter: greedy NMS keeps boxes by descending score, so a box
scored at or below ``t`` never suppresses one above ``t``; the boxes above ``t`` are the
same whatever lower floor the decoder used (end-to-end heads have no NMS at all). Both
callers must therefore decode at or below :data:`MEASURE_CONF`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from edgefleet.shared.histogram import CONFIDENCE_EDGES, bin_counts

MEASURE_CONF = 0.25  # scores strictly above this are counted, on the card and on devices


class Scored(Protocol):
    """What is measured of one box (the agent's ``Detection`` has both)."""

    @property
    def class_name(self) -> str: ...

    @property
    def confidence(self) -> float: ...


class ConfidenceTally:
    """Frames and confidences above ``conf``, binned on ``edges`` overall and per class.

    Not thread-safe: the agent's window holds its own lock around it.
    """

    def __init__(
        self, conf: float = MEASURE_CONF, edges: Sequence[float] = CONFIDENCE_EDGES
    ) -> None:
        self.conf, self.edges = conf, tuple(edges)
        self.frames = 0
        self.empty_frames = 0  # frames with no counted box
        self._values: list[float] = []
        self._per_class: dict[str, list[float]] = {}

    def add_frame(self, boxes: Iterable[Scored]) -> list[float]:
        """Count one frame's boxes; returns the confidences that were counted."""
        counted = []
        for b in boxes:
            c = float(b.confidence)
            if c > self.conf:  # NaN is never above: a broken output counts nothing here
                counted.append(c)
                self._per_class.setdefault(b.class_name, []).append(c)
        self._values.extend(counted)
        self.frames += 1
        self.empty_frames += not counted
        return counted

    @property
    def detections(self) -> int:
        return len(self._values)

    def counts(self) -> list[int]:
        out: list[int] = bin_counts(self._values, self.edges)
        return out

    def per_class(self) -> dict[str, list[int]]:
        return {k: bin_counts(v, self.edges) for k, v in sorted(self._per_class.items())}
