"""Per-frame end-to-end time of the agent's Detector against a bare run and Ultralytics.

Three ways through the same already-decoded images, taking turns in short blocks so a
noisy neighbour on a shared machine slows all of them alike:

* ``agent``: ``Detector.detect(bgr)`` = letterbox -> tensor -> ORT run -> decode / NMS
* ``bare``: ``InferenceSession.run`` on a tensor prepared beforehand (the agent's own session
  options, so the ratio is the cost of pre/post-processing and Python around the run)
* ``ultralytics``: ``YOLO(model.onnx).predict(bgr)`` (only when ultralytics is importable)

Prints one JSON document (``--json``) or a short table, with the ratios of this one run.
Usage: ``python bench/bench_infer.py --model models/shapes/v2/model.onnx --source models/samples``
or ``edgefleet bench infer --model M --source DIR --frames N --json``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from edgefleet.shared.errors import ConfigError

from edgefleet.runtime.detector import Detector
from edgefleet.runtime.onnx_backend import OnnxRuntimeBackend
from edgefleet.runtime.preprocess import preprocess

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
# Each way runs BLOCK frames in a row, the ways taking turns until each has ``frames``
# timed frames. Blocks, not frame-by-frame turns: two ONNX Runtime sessions (the agent's
# and Ultralytics') each keep their worker threads spinning for a while after a run, and
# on a small machine the next frame of the other session would pay for that spin. The
# first BLOCK_WARMUP frames of each block are not timed (caches, thread wake-up).
BLOCK = 25
BLOCK_WARMUP = 5


def load_images(folder: Path) -> list[np.ndarray]:
    if not folder.is_dir():
        raise ConfigError(f"image folder {folder} does not exist")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    images = [img for p in files if (img := cv2.imread(str(p), cv2.IMREAD_COLOR)) is not None]
    if not images:
        raise ConfigError(f"no readable images in {folder}")
    return images


def _ultralytics_predictor(model: Path) -> Callable[[np.ndarray], Any] | None:
    """``YOLO(model).predict`` on one BGR array, or None without ultralytics.

    Ultralytics prints banners to stdout; they are kept out so ``--json`` stays JSON.
    """
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_VERBOSE", "False")
    os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="yolo-cfg-"))
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            from ultralytics import YOLO
        except ImportError:
            return None
        yolo = YOLO(str(model), task="detect")
        yolo.predict(np.zeros((64, 64, 3), np.uint8), device="cpu", verbose=False)

    def predict(img: np.ndarray) -> Any:
        return yolo.predict(img, device="cpu", verbose=False, conf=0.25, iou=0.7)

    return predict


def summarise(ms: list[float]) -> dict[str, float]:
    ordered = sorted(ms)
    return {
        "median_ms": round(statistics.median(ordered), 4),
        "mean_ms": round(statistics.fmean(ordered), 4),
        "p90_ms": round(ordered[int(0.9 * (len(ordered) - 1))], 4),
    }


def bench(
    model: Path, source: Path, frames: int, *, with_ultralytics: bool = True
) -> dict[str, Any]:
    images = load_images(source)
    detector = Detector.from_onnx(model)
    backend = detector.backend
    if not isinstance(backend, OnnxRuntimeBackend):  # from_onnx builds one
        raise ConfigError(f"{model}: not an ONNX Runtime backend")
    session = backend._require()
    input_name = session.get_inputs()[0].name
    tensors = [preprocess(img, detector.info.imgsz) for img in images]
    predict = _ultralytics_predictor(model) if with_ultralytics else None

    runners: dict[str, Callable[[int], object]] = {
        "agent": lambda i: detector.detect(images[i]),
        "bare": lambda i: session.run(None, {input_name: tensors[i]}),
    }
    if predict is not None:
        runners["ultralytics"] = lambda i: predict(images[i])
    times: dict[str, list[float]] = {k: [] for k in runners}
    n = 0
    while min(len(v) for v in times.values()) < frames:
        for name, run in runners.items():
            for k in range(BLOCK):
                i = (n + k) % len(images)
                t0 = time.perf_counter()
                run(i)
                if k >= BLOCK_WARMUP:
                    times[name].append((time.perf_counter() - t0) * 1000.0)
        n += BLOCK
    times = {k: v[:frames] for k, v in times.items()}
    detector.close()

    stats = {k: summarise(v) for k, v in times.items()}
    agent = stats["agent"]["median_ms"]
    result: dict[str, Any] = {
        "model": str(model),
        "imgsz": list(detector.info.imgsz),
        "end2end": detector.info.end2end,
        "frames": frames,
        "images": len(images),
        "stats": stats,
        "ratio_agent_vs_bare": round(agent / stats["bare"]["median_ms"], 3),
        "ratio_agent_vs_ultralytics": (
            round(agent / stats["ultralytics"]["median_ms"], 3) if "ultralytics" in stats else None
        ),
        "targets": {"agent_vs_bare_max": 1.10, "agent_vs_ultralytics_max": 0.9},
    }
    return result


def print_table(r: dict[str, Any]) -> None:
    print(f"{r['model']}  imgsz={r['imgsz']}  end2end={r['end2end']}  frames={r['frames']}")
    for name, s in r["stats"].items():
        print(f"  {name:<12} median {s['median_ms']:8.3f} ms   p90 {s['p90_ms']:8.3f} ms")
    print(f"  agent / bare        {r['ratio_agent_vs_bare']:.3f}  (target <= 1.10)")
    if r["ratio_agent_vs_ultralytics"] is not None:
        print(f"  agent / ultralytics {r['ratio_agent_vs_ultralytics']:.3f}  (target <= 0.90)")
    else:
        print("  agent / ultralytics: ultralytics not installed, skipped")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--source", type=Path, required=True, help="folder of images")
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--no-ultralytics", action="store_true")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    r = bench(a.model, a.source, a.frames, with_ultralytics=not a.no_ultralytics)
    if a.json:
        print(json.dumps(r, indent=2))
    else:
        print_table(r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
