"""Model slots: swaps land between frames, a slot closes only when its frames are done."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from edgefleet.agent.pipeline import FolderSource, FrameResult, Pipeline
from edgefleet.agent.slots import ModelSlots
from edgefleet.agent.store import ModelPointer

from edgefleet.runtime.backend import Detection, ModelInfo
from tests.waiting import wait_for

FRAME = np.zeros((8, 8, 3), dtype=np.uint8)


class FakeDetector:
    """Implements the detector protocol; refuses to run once closed."""

    def __init__(self, name: str, delay_s: float = 0.001) -> None:
        self.name, self.delay_s = name, delay_s
        self.info = ModelInfo(imgsz=(32, 32), names={0: "thing"})
        self.warmed = False
        self.closed = False
        self.calls = 0

    def warm_up(self) -> None:
        self.warmed = True

    def detect(self, bgr: npt.NDArray[np.uint8]) -> list[Detection]:
        if self.closed:
            raise RuntimeError(f"{self.name} used after close")
        self.calls += 1
        time.sleep(self.delay_s)
        if self.closed:
            raise RuntimeError(f"{self.name} closed during a frame")
        return [Detection(0, self.name, 0.9, (0.0, 0.0, 1.0, 1.0))]

    def close(self) -> None:
        self.closed = True


def pointer(version: str) -> ModelPointer:
    return ModelPointer("shapes", version, int(version[1:]), "0" * 64, f"{version}.onnx")


def test_stage_warms_up_and_swap_activates() -> None:
    slots = ModelSlots()
    d1 = FakeDetector("v1")
    slot = slots.stage(d1, pointer("v1"))
    assert d1.warmed
    assert slots.active is None
    assert slots.swap() is slot
    with slots.lease() as leased:
        assert leased is slot


def test_swap_without_staged_model_is_a_bug() -> None:
    with pytest.raises(RuntimeError):
        ModelSlots().swap()


def test_revert_puts_the_old_model_back_and_closes_the_new_one() -> None:
    slots = ModelSlots()
    d1, d2 = FakeDetector("v1"), FakeDetector("v2")
    slots.stage(d1, pointer("v1"))
    slots.swap()
    slots.commit()
    slots.stage(d2, pointer("v2"))
    slots.swap()
    assert slots.active is not None and slots.active.meta.version == "v2"

    restored = slots.revert()

    assert restored is not None and restored.meta.version == "v1"
    assert d2.closed and not d1.closed
    with slots.lease() as slot:
        assert slot is not None
        assert slot.detector.detect(FRAME)[0].class_name == "v1"


def test_revert_of_the_first_model_leaves_no_model() -> None:
    slots = ModelSlots()
    d1 = FakeDetector("v1")
    slots.stage(d1, pointer("v1"))
    slots.swap()
    assert slots.revert() is None
    assert slots.active is None and d1.closed


def test_commit_closes_the_old_model() -> None:
    slots = ModelSlots()
    d1, d2 = FakeDetector("v1"), FakeDetector("v2")
    slots.stage(d1, pointer("v1"))
    slots.swap()
    slots.stage(d2, pointer("v2"))
    slots.swap()
    assert not d1.closed  # kept for a revert until commit
    slots.commit()
    assert d1.closed and not d2.closed


def test_old_slot_closes_only_after_its_in_flight_frame() -> None:
    slots = ModelSlots()
    d1, d2 = FakeDetector("v1", delay_s=0.3), FakeDetector("v2")
    slots.stage(d1, pointer("v1"))
    slots.swap()
    slots.commit()
    result: list[str] = []

    def one_frame() -> None:
        with slots.lease() as slot:
            assert slot is not None
            result.append(slot.detector.detect(FRAME)[0].class_name)

    t = threading.Thread(target=one_frame)
    t.start()
    time.sleep(0.05)  # the frame is now running on v1
    slots.stage(d2, pointer("v2"))
    slots.swap()
    slots.commit()  # waits for the v1 frame
    t.join()
    assert result == ["v1"]
    assert d1.closed
    with slots.lease() as slot:
        assert slot is not None and slot.meta.version == "v2"


def test_frame_loop_never_sees_a_gap_during_20_swaps() -> None:
    slots = ModelSlots()
    slots.stage(FakeDetector("v0"), pointer("v0"))
    slots.swap()
    slots.commit()
    stop = threading.Event()
    served: list[str] = []
    errors: list[BaseException] = []

    def frame_loop() -> None:
        while not stop.is_set():
            try:
                with slots.lease() as slot:
                    if slot is None:
                        served.append("GAP")
                        continue
                    served.append(slot.detector.detect(FRAME)[0].class_name)
            except BaseException as e:  # noqa: BLE001 - recorded; the test asserts none
                errors.append(e)

    loop = threading.Thread(target=frame_loop)
    loop.start()
    try:
        for i in range(1, 21):
            slots.stage(FakeDetector(f"v{i}"), pointer(f"v{i}"))
            time.sleep(0.005)
            slots.swap()
            if i % 4 == 0:
                slots.revert()
                slots.stage(FakeDetector(f"v{i}"), pointer(f"v{i}"))
                slots.swap()
            slots.commit()
    finally:
        time.sleep(0.02)
        stop.set()
        loop.join(5)

    assert errors == []
    assert "GAP" not in served
    assert served[-1] == "v20"
    seen = [v for i, v in enumerate(served) if i == 0 or served[i - 1] != v]
    assert len(seen) >= 10  # the loop really ran across the swaps


def test_close_releases_every_slot() -> None:
    slots = ModelSlots()
    d1, d2 = FakeDetector("v1"), FakeDetector("v2")
    slots.stage(d1, pointer("v1"))
    slots.swap()
    slots.stage(d2, pointer("v2"))
    slots.close()
    assert d1.closed and d2.closed and slots.active is None


class Collect:
    def __init__(self) -> None:
        self.results: list[FrameResult] = []
        self.drops = 0

    def on_frame(self, result: FrameResult) -> None:
        self.results.append(result)

    def on_drop(self, n: int) -> None:
        self.drops += n


def test_pipeline_serves_every_frame_through_20_swaps(repo_root: Path) -> None:
    source = FolderSource(repo_root / "models" / "samples")
    slots = ModelSlots()
    sink = Collect()
    pipeline = Pipeline(source, slots, [sink], fps=0)
    pipeline.start()
    try:
        time.sleep(0.1)
        assert sink.results == []  # idle: no model yet
        for i in range(20):
            slots.stage(FakeDetector(f"v{i}"), pointer(f"v{i}"))
            slots.swap()
            slots.commit()
            time.sleep(0.01)
        time.sleep(0.05)
    finally:
        pipeline.stop()
    assert sink.results, "no frame was served"
    assert all(r.error is None and r.detections for r in sink.results)
    assert sink.results[-1].meta.version == "v19"
    assert len({r.meta.version for r in sink.results}) >= 10
    assert pipeline.drops == 0  # fps=0 paces by the consumer, never drops


def test_real_time_source_drops_oldest_frames_and_counts_them(repo_root: Path) -> None:
    slots = ModelSlots()
    slots.stage(FakeDetector("slow", delay_s=0.05), pointer("v1"))
    slots.swap()
    sink = Collect()
    pipeline = Pipeline(
        FolderSource(repo_root / "models" / "samples"), slots, [sink], fps=200, queue_size=2
    )
    pipeline.start()
    time.sleep(0.5)
    pipeline.stop()
    assert pipeline.drops > 0 and sink.drops == pipeline.drops
    assert 0 < len(sink.results) < 20


class CpuDetector(FakeDetector):
    """A model that runs on the CPU only: records which thread warmed it up and released it."""

    cpu_only = True

    def __init__(self, name: str, fail: bool = False) -> None:
        super().__init__(name)
        self.fail = fail
        self.warmed_on = ""
        self.closed_on = ""

    def warm_up(self) -> None:
        self.warmed_on = threading.current_thread().name
        if self.fail:
            raise RuntimeError(f"{self.name} cannot run")
        self.warmed = True

    def close(self) -> None:
        self.closed_on = threading.current_thread().name
        super().close()


def test_a_cpu_model_warms_up_between_frames_in_the_frame_loop(repo_root: Path) -> None:
    slots, sink = ModelSlots(), Collect()
    slots.stage(FakeDetector("v1"), pointer("v1"))  # no frame loop yet: warmed here
    slots.swap()
    pipeline = Pipeline(FolderSource(repo_root / "models" / "samples"), slots, [sink], fps=50)
    pipeline.start()
    try:
        gpu, cpu, bad = FakeDetector("v2"), CpuDetector("v3"), CpuDetector("v4", fail=True)
        slots.stage(gpu, pointer("v2"))
        assert gpu.warmed  # a GPU model's first run may be long: the stager's own thread
        slots.stage(cpu, pointer("v3"))
        assert cpu.warmed and cpu.warmed_on == "frame-loop"
        with pytest.raises(RuntimeError, match="v4 cannot run"):  # the stager gets the error
            slots.stage(bad, pointer("v4"))
        assert bad.warmed_on == "frame-loop"
        slots.swap()  # the failed model was not staged: v3 is the one waiting
        served = len(sink.results)
        wait_for("frames on v3", lambda: any(r.meta.version == "v3" for r in sink.results))
        assert len(sink.results) > served and pipeline.alive()
    finally:
        pipeline.stop()
    late = CpuDetector("v5")
    slots.stage(late, pointer("v5"))  # the frame loop is gone: warmed in this thread
    assert late.warmed_on == threading.current_thread().name
    slots.close()


def test_a_cpu_model_is_released_between_frames_in_the_frame_loop(repo_root: Path) -> None:
    """Freeing an ONNX Runtime session holds the GIL for milliseconds: the old model is
    released by the frame loop in a gap after a frame, and commit() returns once it is."""
    slots, sink = ModelSlots(), Collect()
    old = CpuDetector("v1")
    slots.stage(old, pointer("v1"))
    slots.swap()
    pipeline = Pipeline(FolderSource(repo_root / "models" / "samples"), slots, [sink], fps=50)
    pipeline.start()
    try:
        wait_for("frames on v1", lambda: any(r.meta.version == "v1" for r in sink.results))
        slots.stage(CpuDetector("v2"), pointer("v2"))
        slots.swap()
        slots.commit()
        assert old.closed and old.closed_on == "frame-loop"
        wait_for("frames on v2", lambda: any(r.meta.version == "v2" for r in sink.results))
        assert all(r.error is None for r in sink.results)  # no frame ran on a closed model
    finally:
        pipeline.stop()
    slots.close()
