"""Hot swaps under load: frames dropped and p99 frame latency during swaps vs steady state.

The agent's real parts, in one process: :class:`Pipeline` (reader thread, bounded queue
with the drop-oldest policy, frame loop), :class:`ModelSlots` and ONNX Runtime detectors.
The frame source replays already-decoded images at a fixed rate set to ``--load`` times the
throughput measured first through the same pipeline (so the frame loop is busy but not
hopelessly behind); every frame the reader could not queue is a counted drop. Meanwhile
the main thread does what the reconcile loop does on an install, ``--swaps`` times,
alternating the models: load a new
detector (a background load, as the agent's loader does), warm it up (``slots.stage``: the
frame loop runs the warm-up between frames), swap between two frames, commit (the old slot
is closed once its in-flight frame is done). ``--plain-load`` loads and warms up at normal
priority in the main thread instead, as the agent did before.

A frame counts as "during a swap" when it finished between the start of a load and
``--settle-s`` after the commit. Latency is the frame's own time on the model
(``FrameResult.latency_ms``): pre-processing, run and decoding.

After each swap, ``--gap-s`` later, comes a control window exactly as long as that swap's
window in which nothing is swapped; then ``--gap-s`` again before the next swap. Drops and
p99 in the control windows are what the machine does without a swap under the same outside
load (other processes on a shared box): only what swaps add beyond them is theirs. The
1-minute load average is reported at the start, the end and its highest in between.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from edgefleet.agent.pipeline import FrameResult, Pipeline
from edgefleet.agent.slots import ModelSlots
from edgefleet.agent.store import ModelPointer
from edgefleet.shared.hashing import sha256_file

from edgefleet.runtime.detector import Detector
from edgefleet.runtime.foreground import Foreground
from edgefleet.runtime.onnx_backend import OnnxRuntimeBackend

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_infer import load_images


class ReplaySource:
    """Images from memory until ``stop``, each a fresh buffer as a camera would give."""

    def __init__(self, images: list[np.ndarray]) -> None:
        self.images = images
        self.stop = threading.Event()
        self.produced = 0

    def frames(self) -> Iterator[np.ndarray]:
        while not self.stop.is_set():
            frame = self.images[self.produced % len(self.images)].copy()
            self.produced += 1
            yield frame


@dataclass
class Recorder:
    """A frame sink: when each frame finished, and how long it took."""

    # (finished at, latency ms, ms from queued to finished)
    done: list[tuple[float, float, float]] = field(default_factory=list)
    drops: int = 0
    drop_times: list[float] = field(default_factory=list)
    errors: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_frame(self, result: FrameResult) -> None:
        with self.lock:
            age = result.wait_ms + result.latency_ms
            self.done.append((time.perf_counter(), result.latency_ms, age))
            self.errors += result.error is not None

    def on_drop(self, n: int) -> None:
        with self.lock:
            self.drops += n
            self.drop_times.extend([time.perf_counter()] * n)


def load_detector(path: Path, *, plain: bool, foreground: Foreground | None = None) -> Detector:
    """As the agent's loader does: a background load that gives way to ``foreground``'s
    frame loop, unless ``plain`` (to compare). The warm-up (``slots.stage``) then runs
    between frames, in the frame loop."""
    backend = OnnxRuntimeBackend(background=not plain, foreground=foreground)
    return Detector.from_backend(backend, path)


def pointers(models: list[Path]) -> Callable[[Path, str], ModelPointer]:
    """Each model's pointer, hashed once up front: the agent hashes an artifact when it is
    downloaded and stored, not while it swaps it in."""
    digests = {m: sha256_file(m) for m in models}
    return lambda path, version: ModelPointer("bench", version, 1, digests[path], path.name)


def measure_capacity(
    path: Path, images: list[np.ndarray], seconds: float = 2.0, *, plain: bool = False
) -> tuple[float, float]:
    """Frames per second one detector sustains: through the pipeline the bench runs (reader
    thread, queue, frame loop, sink), the rate that ``--load`` is a fraction of; and its
    bare ``detect()`` calls back to back, for comparison (measured: within -17 % to +6 % of
    each other, less than either moves between runs a minute apart on a shared box)."""
    det = load_detector(path, plain=plain)
    det.warm_up()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        det.detect(images[n % len(images)])
        n += 1
    bare = n / (time.perf_counter() - t0)
    slots, rec, src = ModelSlots(), Recorder(), ReplaySource(images)
    slots.stage(det, ModelPointer("bench", "capacity", 1, "0" * 64, path.name))
    slots.swap()
    pipe = Pipeline(src, slots, [rec], fps=0)  # blocking reader: the loop never waits
    pipe.start()
    time.sleep(0.5)  # the threads started and the first frames through
    first, t0 = len(rec.done), time.perf_counter()
    time.sleep(seconds)
    through = (len(rec.done) - first) / (time.perf_counter() - t0)
    src.stop.set()
    pipe.stop()
    slots.close()
    return through, bare


PLAIN_HELP = (
    "load and warm up the new model at normal priority in the installing thread, as before "
    "background loads and warm-ups between frames, to compare"
)


UNGATED_HELP = (
    "let the child that prepares a new model run at idle priority whatever the frame loop "
    "does, as before it was paused while the loop has a frame; to compare"
)


FPS_HELP = (
    "paced at this many frames per second instead of --load times the capacity measured "
    "first (which moves with the load on a shared machine); to compare runs at one rate"
)


def p99(values: list[float]) -> float:
    return float(np.percentile(values, 99)) if values else float("nan")


def bench(
    models: list[Path],
    source: Path,
    swaps: int,
    *,
    load: float,
    gap_s: float,
    settle_s: float,
    plain_load: bool = False,
    fps: float = 0.0,
    ungated: bool = False,
) -> dict[str, Any]:
    images = load_images(source)
    capacities = [measure_capacity(m, images, plain=plain_load) for m in models]
    capacity = min(through for through, _ in capacities)
    capacity_bare = min(bare for _, bare in capacities)
    fps = fps or capacity * load  # both 0: saturating, the loop never waits for a frame
    slots, rec, src = ModelSlots(), Recorder(), ReplaySource(images)
    pointer = pointers(models)
    first = load_detector(models[0], plain=plain_load)
    slots.stage(first, pointer(models[0], "m0"))
    slots.swap()
    slots.commit()
    # --ungated: the child runs at idle priority whatever the frame loop does (as before)
    foreground = None if ungated else Foreground()
    pipe = Pipeline(src, slots, [rec], fps=fps, foreground=foreground)  # fps 0: blocking reader
    pipe.start()
    if plain_load:
        slots.warm_between_frames(False)  # as before: warm-ups in this thread too
    windows: list[tuple[float, float]] = []  # from a load's start to settle_s after commit
    controls: list[tuple[float, float]] = []  # as long as the swap before, no swap in them
    swap_ms: list[float] = []
    stage_s: list[float] = []  # load + warm-up of each new model
    loadavg = [os.getloadavg()[0]]
    time.sleep(gap_s)
    for k in range(1, swaps + 1):
        path = models[k % len(models)]
        t0 = time.perf_counter()
        new = load_detector(path, plain=plain_load, foreground=foreground)
        slots.stage(new, pointer(path, f"m{k}"))
        t_swap = time.perf_counter()
        slots.swap()
        slots.commit()
        t1 = time.perf_counter()
        windows.append((t0, t1 + settle_s))
        swap_ms.append((t1 - t_swap) * 1000.0)
        stage_s.append(t_swap - t0)
        time.sleep(settle_s + gap_s)
        controls.append(control_window(t1 + settle_s - t0))
        loadavg.append(os.getloadavg()[0])
        time.sleep(gap_s)
    src.stop.set()  # the source ends; every frame it gave must come out of the loop
    deadline = time.perf_counter() + 10.0
    while len(rec.done) + rec.drops < src.produced and time.perf_counter() < deadline:
        time.sleep(0.05)
    pipe.stop()
    slots.close()
    lost = src.produced - len(rec.done) - rec.drops  # neither processed nor counted: a bug

    in_swap, in_control = within(windows), within(controls)
    during = [lat for t, lat, _ in rec.done if in_swap(t)]
    control = [lat for t, lat, _ in rec.done if in_control(t)]
    steady = [lat for t, lat, _ in rec.done if not in_swap(t) and not in_control(t)]
    # queued to finished: what a stall costs now that the queue holds QUEUE_S of frames
    age_during = [age for t, _, age in rec.done if in_swap(t)]
    age_control = [age for t, _, age in rec.done if in_control(t)]
    age_steady = [age for t, _, age in rec.done if not in_swap(t) and not in_control(t)]
    return {
        "models": [str(m) for m in models],
        "swaps": swaps,
        "model_load": "plain" if plain_load else "background" + (", ungated" * ungated),
        "load_average_1min": {
            "start": round(loadavg[0], 2),
            "end": round(loadavg[-1], 2),
            "max": round(max(loadavg), 2),
        },
        "capacity_fps": round(capacity, 1),  # through the pipeline: what --load scales
        "capacity_detect_fps": round(capacity_bare, 1),  # detect() alone, back to back
        "source_fps": round(fps, 1) if fps else "saturating (blocking reader)",
        "frames": len(rec.done),
        "frames_produced": src.produced,
        "frames_dropped": rec.drops + lost,
        "frames_dropped_during_swaps": sum(in_swap(t) for t in rec.drop_times) + lost,
        "frames_dropped_during_control": sum(in_control(t) for t in rec.drop_times),
        "frame_errors": rec.errors,
        "frames_during_swaps": len(during),
        "frames_during_control": len(control),
        "seconds_during_swaps": round(sum(b - a for a, b in windows), 1),
        "p50_steady_ms": round(float(np.median(steady)), 3),
        "p99_steady_ms": round(p99(steady), 3),
        "p50_during_swaps_ms": round(float(np.median(during)), 3) if during else None,
        "p99_during_swaps_ms": round(p99(during), 3),
        "p99_control_ms": round(p99(control), 3),
        "ratio_p99_swaps_vs_steady": round(p99(during) / p99(steady), 3),
        "ratio_p99_control_vs_steady": round(p99(control) / p99(steady), 3),
        "queue_frames": pipe.queue_size,
        "p99_age_steady_ms": round(p99(age_steady), 3),
        "p99_age_during_swaps_ms": round(p99(age_during), 3),
        "p99_age_control_ms": round(p99(age_control), 3),
        "max_age_ms": round(max(age for _, _, age in rec.done), 3),
        "swap_call_ms_max": round(max(swap_ms), 3),
        "load_and_warm_s_p50": round(float(np.median(stage_s)), 3),
        "load_and_warm_s_max": round(max(stage_s), 3),
        "targets": {"frames_dropped": 0, "ratio_p99_max": 1.5},
    }


def control_window(seconds: float) -> tuple[float, float]:
    """A stretch as long as a swap's window in which nothing is swapped: what the box drops
    and how its p99 moves without a swap, under the same outside load."""
    start = time.perf_counter()
    time.sleep(seconds)
    return start, time.perf_counter()


def within(spans: list[tuple[float, float]]) -> Callable[[float], bool]:
    return lambda t: any(a <= t <= b for a, b in spans)


def print_table(r: dict[str, Any]) -> None:
    print(f"{r['swaps']} swaps between {', '.join(r['models'])} ({r['model_load']} loads)")
    la = r["load_average_1min"]
    print(f"  load average (1 min) {la['start']:.1f} at start, {la['end']:.1f} at end, "
          f"{la['max']:.1f} at most")  # fmt: skip
    rate = r["source_fps"] if isinstance(r["source_fps"], str) else f"{r['source_fps']} fps"
    print(
        f"  source {rate} (capacity {r['capacity_fps']} fps through the pipeline, "
        f"{r['capacity_detect_fps']} fps detect() alone), {r['frames']} frames"
    )
    print(
        f"  dropped {r['frames_dropped']}: {r['frames_dropped_during_swaps']} during swaps, "
        f"{r['frames_dropped_during_control']} in control windows as long with no swap "
        f"({r['seconds_during_swaps']} s of each); errors {r['frame_errors']}  (target 0)"
    )
    print(
        f"  p99 steady {r['p99_steady_ms']} ms, during swaps {r['p99_during_swaps_ms']} ms, "
        f"control {r['p99_control_ms']} ms"
    )
    print(
        f"  ratio {r['ratio_p99_swaps_vs_steady']}  (target <= 1.5); "
        f"control vs steady {r['ratio_p99_control_vs_steady']}"
    )
    print(
        f"  queued to done, {r['queue_frames']}-frame queue: p99 steady "
        f"{r['p99_age_steady_ms']} ms, during swaps {r['p99_age_during_swaps_ms']} ms, control "
        f"{r['p99_age_control_ms']} ms, at most {r['max_age_ms']} ms"
    )
    print(f"  swap() + commit() at most {r['swap_call_ms_max']} ms")
    print(
        f"  load + warm-up of a new model: median {r['load_and_warm_s_p50']} s, "
        f"at most {r['load_and_warm_s_max']} s"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", type=Path, nargs="+", required=True)
    p.add_argument("--source", type=Path, default=Path("models/samples"))
    p.add_argument("--swaps", type=int, default=20)
    p.add_argument(
        "--load",
        type=float,
        default=0.0,
        help="0: saturating source (reader blocks, loop never idle); else paced at this "
        "fraction of the measured capacity, dropping the oldest frame when the queue is full",
    )
    p.add_argument("--fps", type=float, default=0.0, help=FPS_HELP)
    p.add_argument("--gap-s", type=float, default=1.0, help="steady seconds between swaps")
    p.add_argument(
        "--settle-s", type=float, default=0.5, help="seconds after a swap still 'during'"
    )
    p.add_argument("--plain-load", action="store_true", help=PLAIN_HELP)
    p.add_argument("--ungated", action="store_true", help=UNGATED_HELP)
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    r = bench(
        a.models, a.source, a.swaps, load=a.load, gap_s=a.gap_s, settle_s=a.settle_s,
        plain_load=a.plain_load, fps=a.fps, ungated=a.ungated,
    )  # fmt: skip
    if a.json:
        print(json.dumps(r, indent=2))
    else:
        print_table(r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
