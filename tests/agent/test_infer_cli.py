"""``edgefleet infer`` as a user runs it: a subprocess, JSON lines out, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

MODELS = Path(__file__).resolve().parents[2] / "models"
MODEL = MODELS / "shapes/v2/model.onnx"
SAMPLES = sorted((MODELS / "samples").glob("*.jpg"))


def infer(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgefleet", "infer", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], needle: str) -> None:
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert needle in lines[0]


def test_json_lines_one_per_image():
    proc = infer("--model", str(MODEL), "--json", *map(str, SAMPLES[:3]))
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["image"] for r in records] == [str(p) for p in SAMPLES[:3]]
    dets = [d for r in records for d in r["detections"]]
    assert dets
    for d in dets:
        assert set(d) == {"class_id", "class_name", "confidence", "box_xyxy"}
        assert isinstance(d["class_id"], int)
        assert 0.25 < d["confidence"] <= 1.0
        x1, y1, x2, y2 = d["box_xyxy"]
        assert 0 <= x1 <= x2 and 0 <= y1 <= y2


def test_conf_threshold_applies():
    low = infer("--model", str(MODEL), "--json", "--conf", "0.05", str(SAMPLES[0]))
    high = infer("--model", str(MODEL), "--json", "--conf", "0.9", str(SAMPLES[0]))
    n_low = len(json.loads(low.stdout)["detections"])
    n_high = len(json.loads(high.stdout)["detections"])
    assert n_low >= n_high


def test_table_output():
    proc = infer("--model", str(MODELS / "yolo11n-shapes/model.onnx"), str(SAMPLES[0]))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"{SAMPLES[0]}: ")
    assert "detection(s)" in proc.stdout


def test_corrupt_model_is_one_line_error(tmp_path: Path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07this is not a protobuf" * 50)
    assert_one_line_error(infer("--model", str(bad), str(SAMPLES[0])), "bad.onnx")


def test_truncated_model_is_one_line_error(tmp_path: Path):
    bad = tmp_path / "truncated.onnx"
    bad.write_bytes(MODEL.read_bytes()[:20000])
    assert_one_line_error(infer("--model", str(bad), str(SAMPLES[0])), "truncated.onnx")


def test_missing_model_is_one_line_error(tmp_path: Path):
    assert_one_line_error(
        infer("--model", str(tmp_path / "nope.onnx"), str(SAMPLES[0])), "nope.onnx"
    )


@pytest.mark.parametrize("content", [None, b"not an image"])
def test_unreadable_image_is_one_line_error(tmp_path: Path, content: bytes | None):
    img = tmp_path / "frame.jpg"
    if content is not None:
        img.write_bytes(content)
    assert_one_line_error(infer("--model", str(MODEL), "--json", str(img)), "frame.jpg")
