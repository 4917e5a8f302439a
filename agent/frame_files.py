"""Reading one image file as a frame, with its size checked before anything is decoded.

A folder of camera snapshots is input the device does not control: a 20000x20000 image
would take gigabytes to decode, and a truncated or foreign file must cost one log line,
not a busy loop. :func:`image_size` reads the width and height from the first bytes of
PNG, JPEG, BMP, GIF and WebP files without decoding; :func:`read_frame` refuses a file
whose header is unknown, too large or over the byte limit, then decodes it with OpenCV.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

Frame = npt.NDArray[np.uint8]

MAX_PIXELS = 8192 * 8192  # pixels: above any camera a box runs; 200 MB once decoded
MAX_BYTES = 64 * 1024 * 1024  # bytes of one image file
HEAD_BYTES = 64 * 1024  # bytes read to find the size (JPEG may put EXIF before SOF)
_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7,
                       0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})  # fmt: skip


class UnusableImageError(Exception):
    """This file gives no frame; ``kind`` names why (for counters and the rate-limited log)."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind  # unreadable | unknown-format | too-large | corrupt
        self.detail = detail


def image_size(head: bytes) -> tuple[int, int] | None:
    """(width, height) from an image file's first bytes, or None for an unknown format."""
    for parse in (_png, _gif, _bmp, _webp, _jpeg):
        size = parse(head)
        if size is not None:
            return size
    return None


def _png(b: bytes) -> tuple[int, int] | None:
    if b[:8] != b"\x89PNG\r\n\x1a\n" or b[12:16] != b"IHDR" or len(b) < 24:
        return None
    w, h = struct.unpack(">II", b[16:24])
    return int(w), int(h)


def _gif(b: bytes) -> tuple[int, int] | None:
    if b[:6] not in (b"GIF87a", b"GIF89a") or len(b) < 10:
        return None
    w, h = struct.unpack("<HH", b[6:10])
    return int(w), int(h)


def _bmp(b: bytes) -> tuple[int, int] | None:
    if b[:2] != b"BM" or len(b) < 26:
        return None
    w, h = struct.unpack("<ii", b[18:26])
    return abs(int(w)), abs(int(h))  # negative height: rows stored top-down


def _webp(b: bytes) -> tuple[int, int] | None:
    if b[:4] != b"RIFF" or b[8:12] != b"WEBP" or len(b) < 30:
        return None
    chunk = b[12:16]
    if chunk == b"VP8X":
        w = int.from_bytes(b[24:27], "little") + 1
        h = int.from_bytes(b[27:30], "little") + 1
        return w, h
    if chunk == b"VP8L":
        bits = int.from_bytes(b[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 ":
        w, h = struct.unpack("<HH", b[26:30])
        return int(w) & 0x3FFF, int(h) & 0x3FFF
    return None


def _jpeg(b: bytes) -> tuple[int, int] | None:
    if b[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 4 <= len(b):
        if b[i] != 0xFF:
            return None
        marker = b[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        length = int.from_bytes(b[i + 2 : i + 4], "big")
        if marker in _JPEG_SOF and i + 9 <= len(b):
            h, w = struct.unpack(">HH", b[i + 5 : i + 9])
            return int(w), int(h)
        i += 2 + length
    return None


def read_frame(path: Path, max_pixels: int = MAX_PIXELS, max_bytes: int = MAX_BYTES) -> Frame:
    """Decode ``path`` as a BGR frame, or raise :class:`UnusableImageError` saying why not."""
    try:
        size_on_disk = path.stat().st_size
        if size_on_disk > max_bytes:
            raise UnusableImageError("too-large", f"{path}: {size_on_disk} bytes > {max_bytes}")
        with path.open("rb") as f:
            head = f.read(HEAD_BYTES)
            size = image_size(head)
            if size is None:
                raise UnusableImageError("unknown-format", f"{path}: not a PNG/JPEG/BMP/GIF/WebP")
            w, h = size
            if w <= 0 or h <= 0 or w * h > max_pixels:
                raise UnusableImageError("too-large", f"{path}: {w}x{h} > {max_pixels} pixels")
            data = head + f.read()
    except OSError as e:
        raise UnusableImageError("unreadable", f"{path}: {e.strerror or e}") from e
    img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise UnusableImageError("corrupt", f"{path}: cannot be decoded")
    return np.asarray(img, dtype=np.uint8)


@dataclass
class SkipLog:
    """Counts skipped files per kind and logs each kind at most once per ``every`` seconds."""

    every: float = 60.0  # seconds between two log lines of one kind
    clock: Callable[[], float] = time.monotonic
    counts: dict[str, int] = field(default_factory=dict)
    _logged_at: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def skipped(self, error: UnusableImageError) -> None:
        now = self.clock()
        with self._lock:
            self.counts[error.kind] = self.counts.get(error.kind, 0) + 1
            last = self._logged_at.get(error.kind)
            if last is not None and now - last < self.every:
                return
            self._logged_at[error.kind] = now
            total = self.counts[error.kind]
        log.warning("image skipped (%s, %d so far): %s", error.kind, total, error.detail)
