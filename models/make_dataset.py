"""Generate the synthetic "shapes" detection dataset in YOLO format.

Five classes (circle, square, triangle, star, cross) drawn in random colours on noisy,
textured backgrounds; images of varied sizes and aspect ratios (160..480 px each side);
one to five objects per image. Seeded, so the same command gives the same files.

    python models/make_dataset.py --out datasets/shapes --train 1200 --val 200 --seed 0
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import cv2
import numpy as np

CLASSES = ("circle", "square", "triangle", "star", "cross")


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Low-frequency colour blobs + stripes + pixel noise, so shapes are not trivially easy."""
    small = rng.integers(0, 256, size=(max(2, h // 32), max(2, w // 32), 3), dtype=np.uint8)
    img = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC).astype(np.float32)
    if rng.random() < 0.5:
        period = rng.uniform(6, 30)
        angle = rng.uniform(0, math.pi)
        yy, xx = np.mgrid[0:h, 0:w]
        stripes = np.sin((xx * math.cos(angle) + yy * math.sin(angle)) / period * 2 * math.pi)
        img += stripes[..., None] * rng.uniform(10, 40)
    img += rng.normal(0, rng.uniform(4, 20), size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _star(cx: float, cy: float, r: float, rot: float) -> np.ndarray:
    pts = []
    for i in range(10):
        rad = r if i % 2 == 0 else r * 0.45
        a = rot + i * math.pi / 5
        pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
    return np.array(pts, dtype=np.float32)


def _polygon(cls: str, cx: float, cy: float, r: float, rot: float) -> np.ndarray:
    if cls == "square":
        angles = [rot + math.pi / 4 + k * math.pi / 2 for k in range(4)]
        return np.array([(cx + r * math.cos(a), cy + r * math.sin(a)) for a in angles], np.float32)
    if cls == "triangle":
        angles = [rot - math.pi / 2 + k * 2 * math.pi / 3 for k in range(3)]
        return np.array([(cx + r * math.cos(a), cy + r * math.sin(a)) for a in angles], np.float32)
    if cls == "star":
        return _star(cx, cy, r, rot)
    # cross: a plus sign of two bars, rotated
    t = r * 0.33
    base = [(-t, -r), (t, -r), (t, -t), (r, -t), (r, t), (t, t), (t, r), (-t, r), (-t, t),
            (-r, t), (-r, -t), (-t, -t)]  # fmt: skip
    c, s = math.cos(rot), math.sin(rot)
    return np.array([(cx + x * c - y * s, cy + x * s + y * c) for x, y in base], np.float32)


def _draw(img: np.ndarray, rng: np.random.Generator, cls: str, cx: float, cy: float, r: float):
    colour = tuple(int(v) for v in rng.integers(0, 256, size=3))
    if cls == "circle":
        cv2.circle(img, (round(cx), round(cy)), round(r), colour, -1, cv2.LINE_AA)
        return cx - r, cy - r, cx + r, cy + r
    pts = _polygon(cls, cx, cy, r, rng.uniform(0, 2 * math.pi))
    cv2.fillPoly(img, [np.round(pts).astype(np.int32)], colour, cv2.LINE_AA)
    return pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max()


def _make_image(rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    h, w = (int(v) for v in rng.integers(160, 481, size=2))
    img = _background(rng, h, w)
    labels: list[str] = []
    placed: list[tuple[float, float, float]] = []
    for _ in range(int(rng.integers(1, 6))):
        r = rng.uniform(12, min(h, w) / 4)
        for _attempt in range(20):
            cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
            if all(math.hypot(cx - x, cy - y) > (r + q) * 0.9 for x, y, q in placed):
                break
        else:
            continue
        placed.append((cx, cy, r))
        k = int(rng.integers(len(CLASSES)))
        x1, y1, x2, y2 = _draw(img, rng, CLASSES[k], cx, cy, r)
        x1, y1, x2, y2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
        cx, cy, bw, bh = (x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h
        labels.append(f"{k} {cx:.6f} {cy:.6f} {bw:.6f} {bh:.6f}")
    img = cv2.GaussianBlur(img, (3, 3), 0) if rng.random() < 0.3 else img
    return img, labels


def generate(out: Path, n_train: int, n_val: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img, labels = _make_image(rng)
            stem = f"{split}_{i:05d}"
            cv2.imwrite(
                str(out / "images" / split / f"{stem}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 90]
            )
            (out / "labels" / split / f"{stem}.txt").write_text("\n".join(labels) + "\n")
    names = "\n".join(f"  {i}: {n}" for i, n in enumerate(CLASSES))
    data_yaml = out / "data.yaml"
    data_yaml.write_text(
        f"path: {out.resolve()}\ntrain: images/train\nval: images/val\nnames:\n{names}\n"
    )
    return data_yaml


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("datasets/shapes"))
    ap.add_argument("--train", type=int, default=1200)
    ap.add_argument("--val", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(generate(args.out, args.train, args.val, args.seed))


if __name__ == "__main__":
    main()
