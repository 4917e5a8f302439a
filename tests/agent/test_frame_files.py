"""Image folders the device does not control: sizes checked before decoding, bad files
skipped with a counter and a rate-limited log line, no busy loop when every file is bad."""

from __future__ import annotations

import logging
import struct
import threading
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from edgefleet.agent.frame_files import SkipLog, UnusableImageError, image_size, read_frame
from edgefleet.agent.pipeline import FolderSource, open_source


def _png_header_only(w: int, h: int) -> bytes:
    """A PNG whose IHDR claims w x h; its pixel data is garbage (a decompression bomb's head)."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    crc = struct.pack(">I", zlib.crc32(chunk))
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + crc + b"\x00" * 64


def _image(shape: tuple[int, int] = (48, 64)) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, size=(*shape, 3), dtype=np.uint8)


@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp", ".webp"])
def test_size_is_read_from_the_header_of_every_format_opencv_writes(ext: str) -> None:
    ok, data = cv2.imencode(ext, _image((37, 91)))
    assert ok
    assert image_size(data.tobytes()[:65536]) == (91, 37)


def test_gif_and_unknown_headers() -> None:
    assert image_size(b"GIF89a" + struct.pack("<HH", 320, 240) + b"\x00" * 8) == (320, 240)
    assert image_size(b"hello, not an image") is None
    assert image_size(b"") is None


def test_a_huge_image_is_refused_before_it_is_decoded(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header_only(20000, 20000))
    with pytest.raises(UnusableImageError) as e:
        read_frame(bomb)
    assert e.value.kind == "too-large"
    assert "20000x20000" in e.value.detail


def test_each_kind_of_bad_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "text.jpg").write_text("not an image")
    (tmp_path / "empty.png").write_bytes(b"")
    _ok, data = cv2.imencode(".jpg", _image())
    (tmp_path / "cut.jpg").write_bytes(data.tobytes()[:400])  # header fine, body truncated
    kinds = {}
    for name in ("text.jpg", "empty.png", "cut.jpg", "missing.png"):
        with pytest.raises(UnusableImageError) as e:
            read_frame(tmp_path / name)
        kinds[name] = e.value.kind
    assert kinds == {
        "text.jpg": "unknown-format",
        "empty.png": "unknown-format",
        "cut.jpg": "corrupt",
        "missing.png": "unreadable",
    }


def _mixed_folder(folder: Path) -> Path:
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"good-{i}.png"), _image())
    (folder / "bad-text.jpg").write_text("garbage")
    (folder / "bad-bomb.png").write_bytes(_png_header_only(20000, 20000))
    return folder


def test_a_mixed_folder_gives_its_good_frames_and_counts_the_rest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    skipped: list[str] = []
    src = FolderSource(_mixed_folder(tmp_path / "imgs"), loop=True, on_skip=skipped.append)
    frames = src.frames()
    with caplog.at_level(logging.WARNING, logger="edgefleet.agent.frame_files"):
        got = [next(frames) for _ in range(30)]  # ten passes
    assert all(f.shape == (48, 64, 3) for f in got)
    assert src.skips.counts == {"unknown-format": 10, "too-large": 10}
    assert sorted(set(skipped)) == ["too-large", "unknown-format"]
    # One line per kind, not one per file per pass.
    assert len([r for r in caplog.records if "image skipped" in r.message]) == 2


def test_skip_log_speaks_again_after_its_interval() -> None:
    now = [0.0]
    skips = SkipLog(every=60.0, clock=lambda: now[0])
    err = UnusableImageError("corrupt", "x")
    logged = []
    for t in (0.0, 10.0, 59.0, 61.0):
        now[0] = t
        before = skips._logged_at.get("corrupt")
        skips.skipped(err)
        logged.append(skips._logged_at.get("corrupt") != before)
    assert logged == [True, False, False, True]
    assert skips.counts["corrupt"] == 4


def test_a_folder_of_only_bad_files_waits_between_passes_and_closes(tmp_path: Path) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    for i in range(4):
        (folder / f"{i}.jpg").write_bytes(b"\xff\xd8 truncated")
    passes_done = threading.Event()
    seen: list[str] = []

    def on_skip(kind: str) -> None:
        seen.append(kind)
        if len(seen) >= 3 * 4:  # three full passes
            passes_done.set()

    rescan = 0.2  # seconds
    src = FolderSource(folder, loop=True, rescan_s=rescan, on_skip=on_skip)
    ended = threading.Event()

    def pull() -> None:
        for _ in src.frames():
            pass
        ended.set()

    start = time.monotonic()
    t = threading.Thread(target=pull, daemon=True)
    t.start()
    assert passes_done.wait(30)
    elapsed = time.monotonic() - start
    # Three passes need two waits between them: a busy loop would take microseconds.
    assert elapsed >= 2 * rescan * 0.9
    src.close()
    assert ended.wait(10)
    t.join(10)
    assert not t.is_alive()


def _rss_bytes() -> int:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * 4096


def test_memory_stays_flat_over_many_passes_of_a_bad_folder(tmp_path: Path) -> None:
    src = open_source("folder", _mixed_folder(tmp_path / "imgs"))
    frames = src.frames()
    for _ in range(30):
        next(frames)
    before = _rss_bytes()
    for _ in range(600):  # 200 passes, each refusing the 20000x20000 file
        next(frames)
    assert _rss_bytes() - before < 50 * 1024 * 1024
