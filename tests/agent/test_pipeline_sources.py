"""Live sources (USB camera, RTSP) go through OpenCV and survive a source that drops."""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np
from edgefleet.agent.config import parse_config
from edgefleet.agent.pipeline import LiveSource, open_source


def _clip(path: Path, frames: int = 6) -> Path:
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(frames):
        out.write(np.full((48, 64, 3), i * 20, dtype=np.uint8))
    out.release()
    return path


def test_live_source_reads_frames_and_reopens_when_the_stream_ends(tmp_path: Path) -> None:
    # A file opened as a "stream": when it ends, a live source reopens it (a camera replugged).
    src = LiveSource(str(_clip(tmp_path / "clip.avi")), reconnect_s=0.01)
    frames = src.frames()
    got = [next(frames) for _ in range(15)]
    assert all(f.shape == (48, 64, 3) for f in got)


def test_unopenable_camera_keeps_retrying_without_raising(tmp_path: Path) -> None:
    src = LiveSource(str(tmp_path / "no-such-camera"), reconnect_s=0.01)
    done = threading.Event()

    def pull() -> None:
        next(src.frames(), None)
        done.set()

    t = threading.Thread(target=pull, daemon=True)
    t.start()
    assert not done.wait(0.3)  # still retrying, nothing raised
    src.close()  # as Pipeline.stop does: the retry loop ends, no thread is left behind
    t.join(2)
    assert done.is_set() and not t.is_alive()


def test_config_accepts_camera_and_rtsp_sources(tmp_path: Path) -> None:
    base = {
        "device_id": "cam-1", "controller_url": "http://127.0.0.1:1",
        "mqtt_url": "mqtt://127.0.0.1:1", "data_dir": "data",
    }  # fmt: skip
    rtsp = parse_config({**base, "source": {"kind": "rtsp", "path": "rtsp://10.0.0.5/s1"}},
                        base=tmp_path)  # fmt: skip
    assert rtsp.source.path == "rtsp://10.0.0.5/s1"
    assert isinstance(open_source(rtsp.source.kind, rtsp.source.path), LiveSource)
    cam = parse_config({**base, "source": {"kind": "camera", "path": "0"}}, base=tmp_path)
    assert open_source(cam.source.kind, cam.source.path) == LiveSource("0")


def test_stopping_the_pipeline_ends_a_reader_waiting_for_a_camera(tmp_path: Path) -> None:
    """An agent stopped while its camera is unplugged leaves no reader thread behind."""
    from edgefleet.agent.pipeline import Pipeline
    from edgefleet.agent.slots import ModelSlots

    pipeline = Pipeline(LiveSource(str(tmp_path / "unplugged"), reconnect_s=0.05), ModelSlots(),
                        [], fps=5)  # fmt: skip
    pipeline.start()
    reader = next(t for t in pipeline._threads if t.name == "frame-reader")
    reader.join(0.3)
    assert reader.is_alive()  # still retrying
    pipeline.stop(timeout=3)
    assert not reader.is_alive()
