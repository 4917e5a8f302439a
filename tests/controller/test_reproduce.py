"""``edgefleet model reproduce``: the lineage written back as files, ONNX files compared
canonically, and (export extra) the shipped checkpoint pushed, exported again with its
recorded arguments (the same model) and with another opset (named as the difference)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import onnx
import pytest
import yaml
from edgefleet.controller import onnx_compare
from edgefleet.controller.lineage import collect
from edgefleet.controller.reproduce import training_command, write_bundle
from edgefleet.controller.services import Services
from edgefleet.shared.hashing import sha256_file

PT = Path(__file__).resolve().parents[2] / "models" / "shapes" / "v1" / "model.pt"


def _cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EDGEFLEET_URL": url}
    return subprocess.run([sys.executable, "-m", "edgefleet", *args], capture_output=True,
                          text=True, env=env, timeout=600, check=False)  # fmt: skip


def _run_and_data(root: Path) -> tuple[Path, Path]:
    """An Ultralytics run folder (args.yaml, results.csv) and a two-image dataset."""
    images, labels = root / "data" / "images" / "train", root / "data" / "labels" / "train"
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    for i in range(2):
        (images / f"{i}.jpg").write_bytes(bytes([i]) * 64)
        (labels / f"{i}.txt").write_text(f"0 0.5 0.5 0.{i + 1} 0.{i + 1}\n")
    data = root / "data" / "data.yaml"
    data.write_text("path: .\ntrain: images/train\nval: images/train\nnames: {0: circle}\n")
    run = root / "runs" / "train"
    run.mkdir(parents=True)
    (run / "args.yaml").write_text(f"task: detect\nmode: train\nmodel: yolo26n.yaml\n"
                                   f"data: {data}\nepochs: 3\nimgsz: 160\nseed: 0\n")  # fmt: skip
    (run / "results.csv").write_text("epoch,metrics/mAP50(B)\n1,0.1\n2,0.2\n3,0.3\n")
    return run, data


def test_the_bundle_holds_the_command_arguments_and_dataset_manifest(
    tmp_path: Path, make_onnx: Callable[[Path, int], Path]
) -> None:
    run, data = _run_and_data(tmp_path)
    doc = collect(onnx=make_onnx(tmp_path / "m.onnx", 32), run_dir=run, data=data,
                  export_args={"format": "onnx", "imgsz": 160})  # fmt: skip
    out = tmp_path / "out"
    names = {p.name for p in write_bundle(doc, out)}
    assert names == {"lineage.json", "args.yaml", "train.sh", "dataset.json", "dataset.sha256",
                     "export.json"}  # fmt: skip
    assert yaml.safe_load((out / "args.yaml").read_text()) == doc["run"]["args"]
    script = (out / "train.sh").read_text()
    assert training_command(doc["run"]["args"]) in script
    assert f"yolo train task=detect model=yolo26n.yaml data={data} epochs=3 imgsz=160" in script
    sums = (out / "dataset.sha256").read_text().splitlines()
    assert len(sums) == 4 and all(
        sha256_file(data.parent / path) == sha for sha, path in (s.split("  ") for s in sums)
    )
    assert json.loads((out / "export.json").read_text()) == {"format": "onnx", "imgsz": 160}


def test_the_canonical_digest_ignores_the_export_date_and_names_the_rest(
    tmp_path: Path, make_onnx: Callable[[Path, int], Path]
) -> None:
    a = onnx_compare.load(make_onnx(tmp_path / "a.onnx", 32))
    dated = onnx.ModelProto()
    dated.CopyFrom(a)
    dated.metadata_props.add(key="date", value="2026-12-01T10:00:00")
    assert onnx_compare.canonical_digest(dated) == onnx_compare.canonical_digest(a)
    assert onnx_compare.differences(a, dated) == [
        "metadata date: None -> 2026-12-01T10:00:00 (volatile: ignored)"]  # fmt: skip

    other = onnx_compare.load(make_onnx(tmp_path / "b.onnx", 40))
    other.opset_import[0].version += 1
    other.producer_version = "9.9"
    found = onnx_compare.differences(a, other)
    assert onnx_compare.canonical_digest(other) != onnx_compare.canonical_digest(a)
    assert any(line.startswith("producer_version: ") and "'9.9'" in line for line in found)
    assert any(line.startswith("opset ai.onnx: ") for line in found), found
    assert any(line.startswith(("graph input", "initializer")) for line in found), found


@pytest.mark.export
@pytest.mark.slow
def test_reproduce_a_pushed_checkpoint(
    services: Services, serve: Callable[[Services], object], tmp_path: Path
) -> None:
    pytest.importorskip("ultralytics", reason="needs the export extra")
    if not PT.is_file():
        pytest.skip("models/shapes/v1/model.pt is not in this checkout")
    run, data = _run_and_data(tmp_path)
    with serve(services) as client:  # type: ignore[attr-defined]
        url = str(client.base_url)
        pushed = _cli(url, "model", "push", "shapes", str(PT), "--version", "v1",
                      "--run-dir", str(run), "--data", str(data))  # fmt: skip
        assert pushed.returncode == 0, pushed.stderr

        same = _cli(url, "model", "reproduce", "shapes:v1", "--out", str(tmp_path / "a"),
                    "--weights", str(PT))  # fmt: skip
        assert same.returncode == 0, same.stderr
        assert "reproduced: same model" in same.stdout or "identical" in same.stdout, same.stdout
        assert (tmp_path / "a" / "train.sh").is_file() and (
            tmp_path / "a" / "pushed.onnx"
        ).is_file()

        other = _cli(url, "model", "reproduce", "shapes:v1", "--out", str(tmp_path / "b"),
                     "--weights", str(PT), "--export-arg", "opset=12", "--json")  # fmt: skip
        assert other.returncode == 1, other.stderr
        check = json.loads(other.stdout)["check"]
        assert check["verdict"] == "different"
        assert any(d.startswith("opset ai.onnx: ") and d.endswith("-> 12")
                   for d in check["differences"]), check["differences"]  # fmt: skip

        wrong = tmp_path / "other.pt"
        wrong.write_bytes(b"not these weights")
        refused = _cli(url, "model", "reproduce", "shapes:v1", "--out", str(tmp_path / "c"),
                       "--weights", str(wrong))  # fmt: skip
        assert refused.returncode == 1 and "Traceback" not in refused.stderr
        assert "not the weights this version was exported from" in refused.stderr
