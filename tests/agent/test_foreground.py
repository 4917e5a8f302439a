"""A model prepared in the background gives way to the frame loop (runtime/foreground.py):
its child process is stopped while the loop has a frame and runs while the loop waits, runs
on when the loop never waits, and is never left stopped. The policy is tested pure; the
signals on a real child process; the whole on a real pipeline and a real background load."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from edgefleet.agent.pipeline import FrameResult, Pipeline
from edgefleet.agent.slots import ModelSlots
from edgefleet.agent.store import ModelPointer

from edgefleet.runtime.detector import Detector
from edgefleet.runtime.foreground import Foreground, GatePolicy
from edgefleet.runtime.onnx_backend import OnnxRuntimeBackend
from tests.agent.test_pipeline_queue import Stalled

MODELS = Path(__file__).resolve().parents[2] / "models"
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc, signals")
WAIT_S = 30.0  # generous: a loaded 2-core machine


# -- the policy, pure -----------------------------------------------------------------------


def test_busy_stops_and_idle_continues() -> None:
    p = GatePolicy(starve_s=1.0)
    assert p.busy(0.0) is signal.SIGSTOP
    assert p.busy(0.1) is None  # already stopped
    assert p.idle() is signal.SIGCONT
    assert p.idle() is None  # already running
    assert p.busy(0.2) is signal.SIGSTOP


def test_a_loop_that_never_waits_lets_the_child_run_until_it_waits_again() -> None:
    p = GatePolicy(starve_s=1.0)
    assert p.busy(0.0) is signal.SIGSTOP
    assert p.busy(0.99) is None
    assert p.busy(1.0) is signal.SIGCONT  # starved: runs on at idle priority
    assert p.busy(5.0) is None  # and is not stopped again while the loop never waits
    assert p.idle() is None  # running already; the loop waited: gated again from now on
    assert p.busy(5.1) is signal.SIGSTOP


def test_a_loop_stuck_on_one_frame_lets_the_child_run_when_polled() -> None:
    p = GatePolicy(starve_s=1.0)
    assert p.poll(0.0) is None  # running: nothing to do
    assert p.busy(0.0) is signal.SIGSTOP
    assert p.poll(0.5) is None
    assert p.poll(1.0) is signal.SIGCONT  # no busy() or idle() since: the loop is stuck
    assert p.busy(1.1) is None  # free until the loop next waits
    assert p.idle() is None
    assert p.busy(1.2) is signal.SIGSTOP


# -- the signals, on a real child ------------------------------------------------------------


def _state(pid: int) -> str:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0]  # R, S, T (stopped), Z ...


def _wait_state(pid: int, stopped: bool) -> None:
    deadline = time.monotonic() + WAIT_S
    while (_state(pid) == "T") != stopped:
        assert time.monotonic() < deadline, f"child {pid} state {_state(pid)}"
        time.sleep(0.01)


@pytest.fixture
def child() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-c", "import time\nwhile True: time.sleep(0.005)"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


@linux_only
def test_the_child_is_stopped_while_the_loop_is_busy(child: subprocess.Popen[bytes]) -> None:
    gate = Foreground()
    with gate.attached(child.pid):
        gate.busy()
        _wait_state(child.pid, stopped=True)
        gate.idle()
        _wait_state(child.pid, stopped=False)
        gate.busy()
        _wait_state(child.pid, stopped=True)
    _wait_state(child.pid, stopped=False)  # leaving the block continues it: never left stopped
    assert gate.stops == 2


@linux_only
def test_a_child_attached_while_the_loop_is_busy_starts_stopped(
    child: subprocess.Popen[bytes],
) -> None:
    gate = Foreground()
    other = subprocess.Popen([sys.executable, "-c", "import time\ntime.sleep(60)"])
    try:
        with gate.attached(other.pid):
            gate.busy()
            with gate.attached(child.pid):
                _wait_state(child.pid, stopped=True)
                gate.idle()
                _wait_state(child.pid, stopped=False)
    finally:
        other.kill()
        other.wait()


@linux_only
def test_a_starved_child_runs_on(child: subprocess.Popen[bytes]) -> None:
    now = [0.0]
    gate = Foreground(starve_s=1.0, clock=lambda: now[0])
    with gate.attached(child.pid):
        gate.busy()
        _wait_state(child.pid, stopped=True)
        now[0] = 1.5
        gate.busy()  # the loop has not waited for a frame in 1.5 s
        _wait_state(child.pid, stopped=False)


@linux_only
def test_a_child_stopped_by_a_stuck_loop_runs_on_when_polled(
    child: subprocess.Popen[bytes],
) -> None:
    now = [0.0]
    gate = Foreground(starve_s=1.0, clock=lambda: now[0])
    with gate.attached(child.pid):
        gate.busy()  # the loop took a frame and never came back
        _wait_state(child.pid, stopped=True)
        gate.poll()
        _wait_state(child.pid, stopped=True)  # not yet
        now[0] = 1.0
        gate.poll()  # what the waiting loader does every POLL_S
        _wait_state(child.pid, stopped=False)


@linux_only
def test_a_child_that_exited_is_not_signalled() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    gate = Foreground()
    with gate.attached(proc.pid):
        proc.wait()
        gate.busy()  # no error: the pidfd names the exited child, not a new process
        gate.idle()


# -- on a real pipeline and a real background load ------------------------------------------


class Replay:
    def __init__(self, images: list[np.ndarray]) -> None:
        self.images = images

    def frames(self) -> Iterator[np.ndarray]:
        n = 0
        while True:
            yield self.images[n % len(self.images)].copy()
            n += 1


class Count:
    def __init__(self) -> None:
        self.frames = 0
        self.drops = 0

    def on_frame(self, result: FrameResult) -> None:
        self.frames += 1

    def on_drop(self, n: int) -> None:
        self.drops += n


def _images() -> list[np.ndarray]:
    out = []
    for path in sorted((MODELS / "samples").glob("*.jpg"))[:4]:
        img = cv2.imread(str(path))
        assert img is not None
        out.append(img)
    return out


@linux_only
@pytest.mark.parametrize("fps", [40.0, 0.0], ids=["paced", "saturating"])
def test_a_background_load_gives_way_to_the_frame_loop_and_completes(fps: float) -> None:
    """Paced: the child is stopped for frames and runs between them. Saturating (the loop
    never waits): it is stopped, starves, and runs on. Either way the model loads and
    detects what a plain load detects, and frames keep coming."""
    images = _images()
    slots, count = ModelSlots(), Count()
    gate = Foreground(starve_s=0.5)
    slots.stage(Detector.from_onnx(MODELS / "shapes/v2/model.onnx"),
                ModelPointer("m", "v1", 1, "0" * 64, "model.onnx"))  # fmt: skip
    slots.swap()
    pipe = Pipeline(Replay(images), slots, [count], fps=fps, foreground=gate)
    pipe.start()
    plain = Detector.from_onnx(MODELS / "yolo11n-shapes/model.onnx")
    try:
        deadline = time.monotonic() + WAIT_S
        while count.frames < 5:
            assert time.monotonic() < deadline, "no frames"
            time.sleep(0.01)
        backend = OnnxRuntimeBackend(background=True, foreground=gate)
        new = Detector.from_backend(backend, MODELS / "yolo11n-shapes/model.onnx")
        assert gate.stops >= 1  # the child was stopped for at least one frame
        before = count.frames
        slots.stage(new, ModelPointer("m", "v2", 2, "1" * 64, "model.onnx"))
        slots.swap()
        slots.commit()
        while count.frames < before + 5:
            assert time.monotonic() < deadline, "no frames after the swap"
            time.sleep(0.01)
        assert new.detect(images[0]) == plain.detect(images[0])
    finally:
        pipe.stop()
        slots.close()
        plain.close()


@linux_only
def test_a_background_load_completes_while_the_frame_loop_is_stuck() -> None:
    """The loop took a frame and never came back: the child it stopped runs on once it has
    starved, and the new model loads (no install waits for a hung frame)."""
    stuck, slots, gate = Stalled(), ModelSlots(), Foreground(starve_s=0.5)
    slots.stage(stuck, ModelPointer("m", "v1", 1, "0" * 64, "model.onnx"))
    slots.swap()
    pipe = Pipeline(Replay(_images()), slots, [Count()], fps=40.0, foreground=gate)
    pipe.start()
    try:
        assert stuck.started.wait(WAIT_S)
        backend = OnnxRuntimeBackend(background=True, foreground=gate)
        new = Detector.from_backend(backend, MODELS / "yolo11n-shapes/model.onnx")
        assert gate.stops == 1  # stopped for the stuck frame, then let go by the loader's poll
        new.close()
    finally:
        stuck.release.set()
        pipe.stop()
        slots.close()
