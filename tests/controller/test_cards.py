"""Model cards: mAP50 in numpy, the card built by the agent's Detector on labelled images,
served by the API, and ``model push --validation`` / ``model show`` as a user runs them."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from edgefleet.controller.cards import build_card, label_path
from edgefleet.controller.map50 import Box, average_precision, map50
from edgefleet.shared.histogram import CONFIDENCE_EDGES

REPO = Path(__file__).resolve().parents[2]
V2 = REPO / "models" / "shapes" / "v2" / "model.onnx"


@pytest.fixture(scope="module")
def val_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small labelled val split from the repository's own synthetic generator."""
    spec = importlib.util.spec_from_file_location("make_dataset", REPO / "models/make_dataset.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path_factory.mktemp("shapes")
    mod.generate(out, 0, 24, seed=3)
    return out / "images" / "val"


def test_ap_perfect_and_wrong() -> None:
    gt = [Box(0, (0, 0, 10, 10)), Box(1, (20, 20, 30, 30))]
    perfect = [Box(0, (0, 0, 10, 10), 0.9), Box(1, (20, 20, 30, 30), 0.8)]
    # Ultralytics closes the curve at (recall 1, precision 0): a perfect class scores 0.995.
    m, per = map50([(perfect, gt)])
    assert m == pytest.approx(0.995) and per == {0: pytest.approx(0.995), 1: pytest.approx(0.995)}
    wrong_class = [Box(1, (0, 0, 10, 10), 0.9)]
    m, per = map50([(wrong_class, gt)])
    assert per[0] == 0.0 and m is not None and m < 0.5
    assert map50([([], [])]) == (None, {})


def test_ap_ranked_half() -> None:
    # One true positive ranked below one false positive, one of two objects found:
    # precision 0.5 up to recall 0.5, then the closing segment down to (1, 0).
    ap = average_precision([False, True], [0.9, 0.5], n_truth=2)
    x = np.linspace(0, 1, 101)
    want = np.trapezoid(np.interp(x, [0, 0.5, 1], [0.5, 0.5, 0.0]), x)
    assert ap == pytest.approx(want, abs=1e-9)


def test_label_path_in_ultralytics_layout(val_dir: Path) -> None:
    img = sorted(val_dir.glob("*.jpg"))[0]
    assert label_path(img) == val_dir.parent.parent / "labels" / "val" / f"{img.stem}.txt"


def test_card_from_real_model(val_dir: Path) -> None:
    card = build_card(V2, val_dir, "shapes", "v2")
    assert card.images == 24 and card.labelled_images == 24
    assert card.confidence_edges == list(CONFIDENCE_EDGES)
    assert sum(card.confidence_counts) == card.detections > 0
    assert sum(sum(c) for c in card.per_class_confidence.values()) == card.detections
    assert card.detections_per_frame == pytest.approx(card.detections / 24)
    # The shipped v2 scores 0.57 mAP50 on 200 val images (models/README.md).
    assert card.map50 is not None and 0.3 < card.map50 <= 1.0
    assert set(card.ap50_per_class) <= {"circle", "square", "triangle", "star", "cross"}
    assert card.names == dict(enumerate(["circle", "square", "triangle", "star", "cross"]))


def test_card_api_and_cli(client: httpx.Client, val_dir: Path) -> None:
    env = {**os.environ, "EDGEFLEET_URL": str(client.base_url).rstrip("/")}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "edgefleet", *args], capture_output=True,
                              text=True, env=env, timeout=120, check=False)  # fmt: skip

    pushed = cli("model", "push", "shapes", str(V2), "--version", "v2", "--validation",
                 str(val_dir))  # fmt: skip
    assert pushed.returncode == 0, pushed.stderr
    assert "mAP50" in pushed.stdout
    card = client.get("/v1/models/shapes/versions/v2/card").json()
    assert card["model"] == "shapes" and card["images"] == 24 and card["map50"] > 0.3
    shown = cli("model", "show", "shapes:v2")
    assert shown.returncode == 0 and "validation images   24 (24 labelled)" in shown.stdout
    missing = cli("model", "show", "shapes:nope")
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert "no version" in missing.stderr
    no_dir = cli("model", "push", "shapes", str(V2), "--validation", "/nonexistent/dir")
    assert no_dir.returncode == 1 and "validation folder" in no_dir.stderr


def test_card_for_unknown_version_is_404(client: httpx.Client) -> None:
    assert client.get("/v1/models/none/versions/v1/card").status_code == 404
