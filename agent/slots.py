"""Double-buffered model slots: the active model serves frames, a challenger waits beside it.

The frame loop leases the active slot for one frame (:meth:`ModelSlots.lease`); the lock
is held only to read the pointer and count the frame in flight, never during inference,
so a swap never waits for (or starves behind) the frame loop. :meth:`swap` changes the
pointer between two frames; the frame already in flight finishes on the old model, and a
slot is closed only once its in-flight count is back to zero. Until :meth:`commit`, the
old slot is kept open so :meth:`revert` can put it back at once.

While a frame loop runs (:meth:`ModelSlots.warm_between_frames`), the work a swap does on
the CPU runs in the frame loop itself, in the gap after a frame (or after a short wait when
the loop is never idle), each job in a gap of its own: a challenger's warm-up (CPU-only
models) and the release of a model that stopped serving (an ONNX Runtime session frees its
arena and joins its threads with the GIL held, about 6 ms). So neither competes with the
serving model for the cores, and the frame loop catches up between the two. The caller
still waits for each job and gets a warm-up's error; it runs the job itself when no frame
loop takes it. A model on a GPU warms up in the stager's thread: its first run may take
seconds (CUDA context, engine), which the frame loop must not wait.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt
from edgefleet.agent.store import ModelPointer

from edgefleet.runtime.backend import Detection, ModelInfo

log = logging.getLogger(__name__)

CLOSE_WAIT_S = 10.0  # seconds to wait for in-flight frames before closing a slot anyway
WARM_LATE_S = 0.2  # seconds a job waits for an idle gap before it runs between frames anyway
WARM_HANDOFF_S = 5.0  # seconds the caller waits for the frame loop to start a job


class DetectorLike(Protocol):
    """What a slot needs from a model (``runtime.detector.Detector`` implements it)."""

    @property
    def info(self) -> ModelInfo: ...

    def detect(self, bgr: npt.NDArray[np.uint8]) -> list[Detection]: ...

    def warm_up(self) -> None: ...

    def close(self) -> None: ...


_ids = itertools.count(1)


class GapJob:
    """Work for the gap between two frames (a warm-up, a release), run once by whoever
    claims it: the frame loop, or the caller when no loop takes it."""

    def __init__(self, work: Callable[[], None]) -> None:
        self.work = work
        self.since = time.monotonic()
        self.done = threading.Event()
        self.error: Exception | None = None
        self._claimed = False
        self._lock = threading.Lock()

    def claim(self) -> bool:
        with self._lock:
            claimed, self._claimed = self._claimed, True
            return not claimed

    def run(self) -> None:
        try:
            self.work()
        except Exception as e:  # noqa: BLE001 - raised again in the caller's thread
            self.error = e
        finally:
            self.done.set()


@dataclass(eq=False)
class Slot:
    detector: DetectorLike
    meta: ModelPointer
    id: int = field(default_factory=lambda: next(_ids))
    in_flight: int = 0  # frames running on this slot now; guarded by ModelSlots._cond


class ModelSlots:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._active: Slot | None = None
        self._staged: Slot | None = None
        self._retired: Slot | None = None  # the old active, kept open until commit
        self._frame_loop_warms = False
        self._gap_jobs: deque[GapJob] = deque()  # waiting for the frame loop
        self._loop_thread: int | None = None  # the frame loop's thread, once it took a job

    @property
    def active(self) -> Slot | None:
        with self._cond:
            return self._active

    @contextmanager
    def lease(self) -> Iterator[Slot | None]:
        """The active slot for one frame; ``None`` while no model is installed."""
        with self._cond:
            slot = self._active
            if slot is not None:
                slot.in_flight += 1
        try:
            yield slot
        finally:
            if slot is not None:
                with self._cond:
                    slot.in_flight -= 1
                    self._cond.notify_all()

    def wait_active(self, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._active is not None, timeout)

    def stage(self, detector: DetectorLike, meta: ModelPointer) -> Slot:
        """Warm the challenger up (between frames, or in the caller's thread) and stage it;
        a warm-up that fails raises here and stages nothing."""
        self._warm_up(detector)
        slot = Slot(detector, meta)
        with self._cond:
            old, self._staged = self._staged, slot
        if old is not None:
            self._close(old)
        return slot

    def warm_between_frames(self, on: bool) -> None:
        """A frame loop runs (``on``) and takes the swap's CPU work with
        :meth:`take_gap_job`."""
        with self._cond:
            self._frame_loop_warms = on

    def take_gap_job(self, *, idle: bool) -> GapJob | None:
        """For the frame loop, between two frames: one job to run now, if one waits and
        the loop is ``idle`` (no frame queued) or the job has waited too long."""
        with self._cond:
            self._loop_thread = threading.get_ident()
            while self._gap_jobs:
                job = self._gap_jobs[0]
                if not idle and time.monotonic() - job.since < WARM_LATE_S:
                    return None
                self._gap_jobs.popleft()
                if job.claim():
                    return job
        return None

    def _warm_up(self, detector: DetectorLike) -> None:
        self._between_frames(detector.warm_up, cpu=bool(getattr(detector, "cpu_only", False)))

    def _between_frames(self, work: Callable[[], None], *, cpu: bool) -> None:
        """Run ``work`` in the frame loop's next gap (``cpu``: it runs on the CPU alone),
        or here; wait for it, and raise its error here."""
        job = GapJob(work)
        with self._cond:
            handed = self._frame_loop_warms and cpu and self._loop_thread != threading.get_ident()
            if handed:
                self._gap_jobs.append(job)
        if handed:
            deadline = time.monotonic() + WARM_HANDOFF_S
            while not job.done.wait(0.05):
                gone = not self._frame_loop_warms or time.monotonic() > deadline
                if gone and job.claim():  # no frame loop took it: run it here
                    job.run()
        elif job.claim():
            job.run()
        job.done.wait()
        if job.error is not None:
            raise job.error

    def swap(self) -> Slot:
        """Make the staged slot active between two frames; returns it."""
        with self._cond:
            if self._staged is None:
                raise RuntimeError("swap() without a staged model")
            stale = self._retired
            self._retired, self._active, self._staged = self._active, self._staged, None
            self._cond.notify_all()
        if stale is not None:
            self._close(stale)
        return self._active_or_raise()

    def _active_or_raise(self) -> Slot:
        slot = self.active
        if slot is None:
            raise RuntimeError("no active slot after swap")
        return slot

    def rename(self, meta: ModelPointer) -> None:
        """The active model's same bytes now go by ``meta``'s name: frames from now on are
        reported under it (no reload)."""
        with self._cond:
            if self._active is not None and self._active.meta.sha256 == meta.sha256:
                self._active.meta = meta

    def commit(self) -> None:
        """The new model stays: release the old one once its last frame is done."""
        with self._cond:
            old, self._retired = self._retired, None
        if old is not None:
            self._close(old)

    def revert(self) -> Slot | None:
        """Put the previous model back (or none, if there was none); returns it."""
        with self._cond:
            bad, self._active, self._retired = self._active, self._retired, None
            self._cond.notify_all()
            restored = self._active
        if bad is not None:
            self._close(bad)
        return restored

    def discard_staged(self) -> None:
        with self._cond:
            staged, self._staged = self._staged, None
        if staged is not None:
            self._close(staged)

    def close(self) -> None:
        with self._cond:
            slots = [s for s in (self._active, self._staged, self._retired) if s is not None]
            self._active = self._staged = self._retired = None
        for s in slots:
            self._close(s)

    def _close(self, slot: Slot) -> None:
        with self._cond:
            idle = self._cond.wait_for(lambda: slot.in_flight == 0, CLOSE_WAIT_S)
        if not idle:
            log.warning("closing %s with a frame still in flight", slot.meta.version)
        try:
            cpu = bool(getattr(slot.detector, "cpu_only", False))
            self._between_frames(slot.detector.close, cpu=cpu)
        except Exception:  # a failing close must not keep the new model from serving
            log.exception("closing model %s %s failed", slot.meta.model, slot.meta.version)
