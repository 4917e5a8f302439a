"""The frame queue holds QUEUE_S of a paced source's frames (at least 4): a frame loop that
stalls for less than that loses no frame, and each result says how long its frame waited."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt
import pytest
from edgefleet.agent.pipeline import MIN_QUEUE, QUEUE_S, Pipeline, queue_frames
from edgefleet.agent.slots import ModelSlots
from edgefleet.agent.store import ModelPointer

from edgefleet.runtime.backend import Detection, ModelInfo
from tests.agent.test_slots import Collect

WAIT_S = 30.0  # generous: a loaded 2-core machine


@pytest.mark.parametrize(
    ("fps", "frames"),
    [(0.0, MIN_QUEUE), (10.0, MIN_QUEUE), (30.0, 8), (100.0, 25), (250.0, 63)],
)
def test_the_queue_holds_a_quarter_second_of_frames_and_at_least_four(
    fps: float, frames: int
) -> None:
    assert QUEUE_S == 0.25
    assert queue_frames(fps) == frames


class Stalled:
    """A model whose first frame waits until the test lets it go (a stuck frame loop)."""

    cpu_only = False

    def __init__(self) -> None:
        self.info = ModelInfo(imgsz=(32, 32), names={0: "thing"})
        self.started = threading.Event()
        self.release = threading.Event()

    def warm_up(self) -> None:
        pass

    def detect(self, bgr: npt.NDArray[np.uint8]) -> list[Detection]:
        if not self.started.is_set():
            self.started.set()
            assert self.release.wait(WAIT_S)
        return [Detection(0, "thing", 0.9, (0.0, 0.0, 1.0, 1.0))]

    def close(self) -> None:
        pass


class Burst:
    """``n`` frames as fast as the reader's pace allows, then the source ends."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.given = 0
        self.done = threading.Event()

    def frames(self) -> Iterator[npt.NDArray[np.uint8]]:
        for _ in range(self.n):
            self.given += 1
            yield np.zeros((32, 32, 3), dtype=np.uint8)
        self.done.set()


def test_a_stall_shorter_than_the_queue_costs_latency_not_frames() -> None:
    """At 200 fps the queue holds 50 frames: 30 frames that arrive while the model is stuck
    on one all wait and are served, none dropped (a queue of 4 would drop 26 of them)."""
    model, sink, slots = Stalled(), Collect(), ModelSlots()
    slots.stage(model, ModelPointer("m", "v1", 1, "0" * 64, "m.onnx"))
    slots.swap()
    source = Burst(31)
    pipeline = Pipeline(source, slots, [sink], fps=200)
    assert pipeline.queue_size == 50
    pipeline.start()
    try:
        assert model.started.wait(WAIT_S)
        assert source.done.wait(WAIT_S)  # every frame offered while the model was stuck
        model.release.set()
        deadline = time.monotonic() + WAIT_S
        while len(sink.results) < 31:
            assert time.monotonic() < deadline, f"{len(sink.results)} frames served"
            time.sleep(0.01)
        held_ms = max(r.wait_ms for r in sink.results)
    finally:
        pipeline.stop()
    assert sink.drops == 0 and pipeline.drops == 0
    assert sink.results[0].wait_ms < held_ms  # the first frame was taken at once
    assert held_ms > 0.0  # the others waited in the queue, and their results say so
