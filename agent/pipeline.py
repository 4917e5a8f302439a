"""Frames in, detections out: sources, a bounded queue, and the frame loop.

Two threads. The reader takes frames from a source at ``fps`` (0 = as fast as the loop
consumes them) into a bounded queue; when the queue is full a real-time source drops the
oldest frame and counts it, as a camera would. The queue holds ``QUEUE_S`` of a paced
source's frames (at least ``MIN_QUEUE``): a stall of the frame loop costs latency, not
frames, up to that long, whatever the rate (4 frames were 16 ms at 250 fps, shorter than
the stalls a 2-core box has on its own). The frame loop leases the active model slot for
one frame, runs it, and hands a :class:`FrameResult` to every sink (the telemetry window,
the health check); each result says how long its frame waited. With no model installed
both threads idle. While the loop has a frame, a model being prepared in the background
is paused (runtime/foreground.py).
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
import numpy.typing as npt
from edgefleet.agent.candidates import RawSummary
from edgefleet.agent.frame_files import MAX_PIXELS, SkipLog, UnusableImageError, read_frame
from edgefleet.agent.slots import ModelSlots
from edgefleet.agent.store import ModelPointer
from edgefleet.shared.errors import ConfigError

from edgefleet.runtime.backend import Detection
from edgefleet.runtime.foreground import Foreground

log = logging.getLogger(__name__)

Frame = npt.NDArray[np.uint8]
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
IDLE_WAIT_S = 0.2  # seconds between checks for a model while none is installed
QUEUE_S = 0.25  # seconds of frames a paced source's queue holds
MIN_QUEUE = 4  # frames, whatever the rate (and a blocking source's queue)


def queue_frames(fps: float, seconds: float = QUEUE_S) -> int:
    """How many frames the queue holds: ``seconds`` of a paced source's frames, at least
    ``MIN_QUEUE``; a source read as fast as the loop consumes (``fps`` 0) never drops."""
    return max(MIN_QUEUE, math.ceil(fps * seconds)) if fps > 0 else MIN_QUEUE


class FrameSource(Protocol):
    def frames(self) -> Iterator[Frame]: ...


@dataclass(frozen=True)
class FolderSource:
    """Every image in a folder, in name order, the folder listed again on every pass.

    A file that gives no frame (unreadable, unknown format, over the size caps, corrupt)
    is skipped, counted per kind in ``skips`` and logged at most once a minute per kind.
    A pass with no good frame at all waits ``rescan_s`` before the next one, so a folder
    of bad files costs nothing while it waits to be fixed.
    """

    folder: Path
    loop: bool = True
    rescan_s: float = 1.0  # seconds between passes over a folder with no readable image
    max_pixels: int = MAX_PIXELS
    skips: SkipLog = field(default_factory=SkipLog, compare=False, repr=False)
    on_skip: Callable[[str], None] | None = field(default=None, compare=False, repr=False)
    _closed: threading.Event = field(default_factory=threading.Event, compare=False, repr=False)

    def frames(self) -> Iterator[Frame]:
        while not self._closed.is_set():
            files = self._list()
            good = yield from self._pass(files)
            if not self.loop:
                return
            if not good:
                self._closed.wait(self.rescan_s)

    def _list(self) -> list[Path]:
        files = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ConfigError(f"no images in {self.folder}")
        return files

    def _pass(self, files: list[Path]) -> Generator[Frame, None, int]:
        good = 0
        for path in files:
            if self._closed.is_set():
                break
            try:
                frame = read_frame(path, self.max_pixels)
            except UnusableImageError as e:
                self.skips.skipped(e)
                if self.on_skip is not None:
                    self.on_skip(e.kind)
                continue
            good += 1
            yield frame
        return good

    def close(self) -> None:
        """End :meth:`frames` within one file read or one rescan wait."""
        self._closed.set()


@dataclass(frozen=True)
class VideoSource:
    """A video file through OpenCV, rewound at its end when looping."""

    path: Path
    loop: bool = True

    def frames(self) -> Iterator[Frame]:
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            raise ConfigError(f"cannot open video {self.path}")
        try:
            yield from self._read(cap)
        finally:
            cap.release()

    def _read(self, cap: cv2.VideoCapture) -> Iterator[Frame]:
        got_any = False
        while True:
            ok, img = cap.read()
            if ok:
                got_any = True
                yield np.asarray(img, dtype=np.uint8)
                continue
            if not (self.loop and got_any):
                return
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)


@dataclass(frozen=True)
class LiveSource:
    """A USB camera (device index or /dev/videoN) or an RTSP stream through OpenCV.

    A camera that is unplugged or a stream that drops is reopened every ``reconnect_s``
    seconds; the frame loop keeps its model and simply sees no frames meanwhile.
    """

    target: str
    reconnect_s: float = 2.0  # seconds between attempts to reopen
    _closed: threading.Event = field(default_factory=threading.Event, compare=False, repr=False)

    def _open(self) -> cv2.VideoCapture:
        device = int(self.target) if self.target.isdigit() else self.target
        return cv2.VideoCapture(device)

    def frames(self) -> Iterator[Frame]:
        while not self._closed.is_set():
            cap = self._open()
            try:
                if not cap.isOpened():
                    log.warning("cannot open %s: retrying in %.0fs", self.target, self.reconnect_s)
                while cap.isOpened() and not self._closed.is_set():
                    ok, img = cap.read()
                    if not ok:
                        log.warning("%s stopped sending frames: reopening", self.target)
                        break
                    yield np.asarray(img, dtype=np.uint8)
            finally:
                cap.release()
            self._closed.wait(self.reconnect_s)

    def close(self) -> None:
        """End :meth:`frames` (within one read or one reconnect wait). A reader stuck on an
        unplugged camera would otherwise retry in OpenCV until the process exits, and a
        native call still running then can abort the interpreter on its way out."""
        self._closed.set()


def open_source(
    kind: str,
    path: Path | str,
    *,
    loop: bool = True,
    on_skip: Callable[[str], None] | None = None,  # a folder's skipped file, by kind
) -> FrameSource:
    if kind == "folder":
        return FolderSource(Path(path), loop, on_skip=on_skip)
    if kind == "video":
        return VideoSource(Path(path), loop)
    if kind in ("camera", "rtsp"):
        return LiveSource(str(path))
    raise ConfigError(f"unknown source kind {kind!r}")


@dataclass(frozen=True)
class FrameResult:
    slot_id: int
    meta: ModelPointer
    latency_ms: float
    detections: list[Detection] = field(default_factory=list)
    error: str | None = None  # the model raised on this frame
    # the input image, for sinks that need it (shadow sampling); not copied, do not modify
    frame: Frame | None = field(default=None, repr=False, compare=False)
    # scored below the confidence cut (agent/candidates.py); None: the model cannot say
    candidates: list[Detection] | None = field(default=None, repr=False, compare=False)
    # the raw output before the cut (NaN, all-zero scores); None: the detector cannot say
    raw: RawSummary | None = field(default=None, repr=False, compare=False)
    wait_ms: float = 0.0  # how long the frame waited in the queue before the model took it


class FrameSink(Protocol):
    def on_frame(self, result: FrameResult) -> None: ...

    def on_drop(self, n: int) -> None: ...


class Pipeline:
    def __init__(
        self,
        source: FrameSource,
        slots: ModelSlots,
        sinks: Sequence[FrameSink],
        *,
        fps: float = 10.0,  # frames per second; 0 = as fast as possible
        queue_size: int | None = None,  # frames; None: queue_frames(fps)
        clock: Callable[[], float] = time.monotonic,
        foreground: Foreground | None = None,  # told when the loop has a frame, and when not
    ) -> None:
        self.source, self.slots, self.sinks = source, slots, list(sinks)
        self.foreground = foreground or Foreground()
        self.fps, self.clock = fps, clock
        size = queue_frames(fps) if queue_size is None else queue_size
        self.queue_size = size
        self._queue: queue.Queue[tuple[float, Frame]] = queue.Queue(maxsize=size)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.frames = 0
        self.drops = 0
        self.errors = 0

    def start(self) -> None:
        self.slots.warm_between_frames(True)
        for name, target in (("frame-reader", self._read_loop), ("frame-loop", self._frame_loop)):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def alive(self) -> bool:
        """The frame loop is running (what the systemd watchdog vouches for)."""
        return any(t.name == "frame-loop" and t.is_alive() for t in self._threads)

    def stop(self, timeout: float = 3.0) -> None:
        self._stop.set()
        self.slots.warm_between_frames(False)
        self.foreground.idle()  # a model still being prepared must not stay paused
        close = getattr(self.source, "close", None)  # a live source may be waiting to reopen
        if callable(close):
            close()
        for t in self._threads:
            t.join(timeout)

    # -- reader ------------------------------------------------------------------------

    def _read_loop(self) -> None:
        try:
            self._pump(self.source.frames())
        except ConfigError as e:
            log.error("frame source stopped: %s", e)  # noqa: TRY400 - one line, no traceback
        except OSError as e:
            log.error("frame source unreadable: %s", e)  # noqa: TRY400
        except cv2.error as e:
            log.error("frame source failed: %s", e)  # noqa: TRY400
        else:
            if not self._stop.is_set():
                log.info("frame source ended")

    def _pump(self, frames: Iterator[Frame]) -> None:
        period = 1.0 / self.fps if self.fps > 0 else 0.0
        next_at = self.clock()
        for frame in frames:
            while not self.slots.wait_active(IDLE_WAIT_S):
                if self._stop.is_set():
                    return
            if self._stop.is_set():
                return
            if period:
                next_at = self._pace(next_at, period)
                self._offer(frame)
            else:
                self._put_blocking(frame)

    def _pace(self, next_at: float, period: float) -> float:
        delay = next_at - self.clock()
        if delay > 0:
            self._stop.wait(delay)
        # Do not try to catch up after a stall: a camera would not either.
        return max(next_at + period, self.clock())

    def _offer(self, frame: Frame) -> None:
        """Real-time: a full queue drops its oldest frame to make room."""
        while True:
            try:
                self._queue.put_nowait((self.clock(), frame))
            except queue.Full:
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    continue
                self._count_drop()
            else:
                return

    def _put_blocking(self, frame: Frame) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put((self.clock(), frame), timeout=IDLE_WAIT_S)
            except queue.Full:
                continue
            else:
                return

    def _count_drop(self) -> None:
        self.drops += 1
        for sink in self.sinks:
            sink.on_drop(1)

    # -- frame loop --------------------------------------------------------------------

    def _frame_loop(self) -> None:
        try:
            while not self._stop.is_set():
                self._gap_job()
                self._next_frame()
        finally:
            self.foreground.idle()

    def _next_frame(self) -> None:
        """One frame from the queue through the model. A model being prepared in the
        background runs only while the loop waits here on an empty queue (foreground.py)."""
        if self._queue.empty():
            self.foreground.idle()
        try:
            queued_at, frame = self._queue.get(timeout=IDLE_WAIT_S)
        except queue.Empty:
            return
        self.foreground.busy()
        result = self.process(frame, queued_at)
        if result is not None:
            self._emit(result)

    def _gap_job(self) -> None:
        """A swap's CPU work (a new model's warm-up, an old one's release) in the gap after
        a frame: on this thread, it takes no core from the model serving (see slots.py)."""
        job = self.slots.take_gap_job(idle=self._queue.empty())
        if job is not None:
            job.run()

    def process(self, frame: Frame, queued_at: float | None = None) -> FrameResult | None:
        """Run one frame on the active model; ``None`` when no model is installed."""
        with self.slots.lease() as slot:
            if slot is None:
                return None
            t0 = self.clock()
            wait_ms = 0.0 if queued_at is None else (t0 - queued_at) * 1000.0
            try:
                dets, cands, raw = _detect(slot.detector, frame)
                error = None
            # A broken model must not end the loop: the health check sees the error, reverts.
            except Exception as e:  # noqa: BLE001
                dets, cands, raw, error = [], None, None, f"{type(e).__name__}: {e}"
            latency_ms = (self.clock() - t0) * 1000.0
        self.frames += 1
        if error:
            self.errors += 1
        return FrameResult(
            slot.id, slot.meta, latency_ms, dets, error, frame, cands, raw, wait_ms=wait_ms
        )

    def _emit(self, result: FrameResult) -> None:
        for sink in self.sinks:
            try:
                sink.on_frame(result)
            except Exception:  # one faulty sink must not stop inference for the others
                log.exception("frame sink %r failed", sink)


def _detect(
    detector: object, frame: Frame
) -> tuple[list[Detection], list[Detection] | None, RawSummary | None]:
    """Detections, plus the candidates below the cut and the raw output's summary when the
    detector offers them."""
    raw = getattr(detector, "detect_raw", None)
    if raw is not None:
        kept, below, summary = raw(frame)
        return kept, below, summary
    split = getattr(detector, "detect_with_candidates", None)
    if split is not None:
        kept, below = split(frame)
        return kept, below, None
    dets: list[Detection] = detector.detect(frame)  # type: ignore[attr-defined]
    return dets, None, None
