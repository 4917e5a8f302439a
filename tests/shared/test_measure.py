"""The one confidence measurement (shared/measure.py) that cards and windows both use."""

from __future__ import annotations

from dataclasses import dataclass

from edgefleet.shared.histogram import CONFIDENCE_EDGES, bin_counts
from edgefleet.shared.measure import MEASURE_CONF, ConfidenceTally


@dataclass(frozen=True)
class Box:
    class_name: str
    confidence: float


def test_counts_strictly_above_the_threshold_overall_and_per_class() -> None:
    t = ConfidenceTally()
    assert t.conf == MEASURE_CONF == 0.25
    counted = t.add_frame([Box("a", 0.9), Box("b", MEASURE_CONF), Box("b", 0.3), Box("a", 0.1)])
    assert counted == [0.9, 0.3]
    t.add_frame([Box("a", 0.2)])  # nothing above: an empty frame
    t.add_frame([Box("a", float("nan"))])  # a broken output counts nothing
    assert (t.frames, t.empty_frames, t.detections) == (3, 2, 2)
    assert t.counts() == bin_counts([0.9, 0.3], CONFIDENCE_EDGES)
    assert t.per_class() == {"a": bin_counts([0.9], CONFIDENCE_EDGES),
                             "b": bin_counts([0.3], CONFIDENCE_EDGES)}  # fmt: skip


def test_order_of_frames_and_boxes_does_not_matter() -> None:
    boxes = [Box("a", 0.31), Box("b", 0.77), Box("a", 0.52), Box("c", 0.99)]
    one, two = ConfidenceTally(), ConfidenceTally()
    one.add_frame(boxes)
    two.add_frame(boxes[2:])
    two.add_frame(boxes[:2])
    assert one.counts() == two.counts() and one.per_class() == two.per_class()
