"""Push checks a detector: the controller loads the upload with ONNX Runtime, runs it on a
probe image and decodes it with the agent's decoder before it signs anything.

The bad models come from ``models/make_bad.py`` (a NaN head, a classifier, a 1x10 Identity);
the shipped ones (shapes v1/v2, the raw-head export, yolo11n-shapes) must pass.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import httpx
import numpy as np
import pytest
from edgefleet.controller.detector_check import NotADetectorError, check_detector

from edgefleet.runtime.backend import ModelInfo
from edgefleet.runtime.head_check import head_problem

REPO = Path(__file__).resolve().parents[2]
SHIPPED = {
    "shapes-v1": REPO / "models/shapes/v1/model.onnx",
    "shapes-v2": REPO / "models/shapes/v2/model.onnx",
    "shapes-v2-raw": REPO / "models/shapes/v2/model-raw.onnx",
    "yolo11n-shapes": REPO / "models/yolo11n-shapes/model.onnx",
}


def make_bad_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_bad", REPO / "models" / "make_bad.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("make_bad", module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def bad(tmp_path: Path) -> dict[str, Path]:
    """Every kind of refused model make_bad.py builds, written under tmp_path."""
    mb = make_bad_module()
    return {
        "nan": mb.make_nan(SHIPPED["shapes-v2"], tmp_path / "nan.onnx"),
        "classifier": mb.make_classifier(tmp_path / "classifier.onnx"),
        "identity": mb.make_identity(tmp_path / "identity.onnx"),
    }


REASONS = {
    "nan": "non-finite values",
    "classifier": "task is 'classify'",
    "identity": "not a detector the agent can run",
}


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_detectors_pass(name: str) -> None:
    info = check_detector(SHIPPED[name])
    assert len(info.names) == 5
    assert info.end2end == (name in ("shapes-v1", "shapes-v2"))


def test_make_bad_kinds_are_refused_with_the_reason(bad: dict[str, Path]) -> None:
    for kind, path in bad.items():
        with pytest.raises(NotADetectorError, match=REASONS[kind]) as caught:
            check_detector(path)
        assert "\n" not in caught.value.reason


def test_the_shift_model_is_still_a_detector(tmp_path: Path) -> None:
    """make_bad's default kind sees worse on purpose but stays decodable: canary catches it."""
    out = make_bad_module().make_bad(SHIPPED["shapes-v2"], tmp_path / "shift.onnx", 1.0)
    assert check_detector(out).end2end


def test_api_push_of_a_non_detector_is_422_and_stores_nothing(
    client: httpx.Client, bad: dict[str, Path], onnx_model: Path
) -> None:
    for kind, path in bad.items():
        with path.open("rb") as f:
            r = client.post("/v1/models/m/versions", files={"file": (path.name, f)})
        assert r.status_code == 422, r.text
        detail = r.json()["detail"]
        assert REASONS[kind] in detail and "\n" not in detail, detail
    assert client.get("/v1/models").json()["count"] == 0
    with onnx_model.open("rb") as f:
        ok = client.post("/v1/models/m/versions", files={"file": (onnx_model.name, f)})
    assert ok.status_code == 200 and ok.json()["release"] == 1, ok.text


INFO = ModelInfo(imgsz=(32, 32), names={0: "a", 1: "b"}, end2end=False)


@pytest.mark.parametrize(
    ("output", "end2end", "needle"),
    [
        (np.zeros((1, 10), np.float32), False, "not a detector head"),
        (np.zeros((2, 6, 8), np.float32), False, "not a detector head"),
        (np.zeros((1, 7, 8), np.float32), False, "raw head of 2 classes (1, 6, anchors)"),
        (np.zeros((1, 300, 5), np.float32), True, "not an end-to-end head"),
        (np.full((1, 6, 8), np.inf, np.float32), False, "48 non-finite values"),
        (np.full((1, 300, 6), 3.0, np.float32), True, "outside [0, 1]"),
    ],
)
def test_head_problem_names_what_is_wrong(output: np.ndarray, end2end: bool, needle: str) -> None:
    info = ModelInfo(imgsz=INFO.imgsz, names=INFO.names, end2end=end2end)
    problem = head_problem(info, output)
    assert problem is not None and needle in problem, problem


@pytest.mark.parametrize("end2end", [True, False])
def test_head_problem_accepts_decodable_heads(end2end: bool) -> None:
    shape = (1, 300, 6) if end2end else (1, 6, 8400)
    output = np.random.default_rng(0).random(shape, dtype=np.float32)
    info = ModelInfo(imgsz=INFO.imgsz, names=INFO.names, end2end=end2end)
    assert head_problem(info, output) is None


def test_the_test_suites_tiny_model_is_a_detector(
    make_onnx: Callable[[Path, int], Path], tmp_path: Path
) -> None:
    """Other tests push make_onnx models: they must pass the check like a real export."""
    assert check_detector(make_onnx(tmp_path / "t.onnx", 16)).imgsz == (16, 16)
