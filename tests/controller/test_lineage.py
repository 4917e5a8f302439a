"""Lineage recorded at push: collected from a synthetic Ultralytics run directory and a
dataset made by the repository's own generator (with DVC files), stored on the version,
printed by ``model show`` and compared by ``model diff``, as a user runs them."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from edgefleet.controller.lineage import (
    collect,
    collect_dataset,
    collect_run,
    diff,
    manifest_digest,
)
from edgefleet.controller.services import Services
from edgefleet.shared.errors import ConfigError
from edgefleet.shared.hashing import sha256_file

REPO = Path(__file__).resolve().parents[2]
V1 = REPO / "models" / "shapes" / "v1"
V2 = REPO / "models" / "shapes" / "v2"
GIT = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t", "-c", "init.defaultBranch=m"]


def _dataset(out: Path, seed: int) -> Path:
    spec = importlib.util.spec_from_file_location("make_dataset", REPO / "models/make_dataset.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.generate(out, 4, 2, seed=seed)  # type: ignore[no-any-return]


def _run(folder: Path, data: Path, map50: float, epochs: int = 3, lr0: float = 0.01) -> Path:
    """What Ultralytics writes into runs/detect/trainN: args.yaml and results.csv (its
    header padded with spaces), no training needed."""
    (folder / "weights").mkdir(parents=True)
    (folder / "args.yaml").write_text(
        f"task: detect\nmode: train\nmodel: yolo11n.pt\ndata: {data}\nepochs: {epochs}\n"
        f"imgsz: 320\nbatch: 16\nseed: 0\nlr0: {lr0}\n"
    )
    header = "                  epoch,      train/box_loss,   metrics/mAP50(B),metrics/mAP50-95(B)"
    rows = [f"{e + 1},{1.5 - e * 0.1:.4f},{map50 * (e + 1) / epochs:.5f},{map50 / 2:.5f}"
            for e in range(epochs)]  # fmt: skip
    (folder / "results.csv").write_text("\n".join([header, *rows]) + "\n")
    return folder


@pytest.fixture
def trained(tmp_path: Path) -> tuple[Path, Path]:
    data = _dataset(tmp_path / "shapes", seed=1)
    run = _run(tmp_path / "runs" / "train", data, map50=0.5)
    return run, data


def test_run_and_dataset_with_dvc(tmp_path: Path, trained: tuple[Path, Path]) -> None:
    run, data = trained
    root = data.parent
    (tmp_path / "shapes.dvc").write_text(
        "outs:\n- md5: 0123456789abcdef0123456789abcdef.dir\n  size: 1234\n  nfiles: 12\n"
        "  hash: md5\n  path: shapes\n"
    )
    (tmp_path / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  make:\n    cmd: python make_dataset.py\n    outs:\n"
        "    - path: shapes\n      hash: md5\n      md5: fedcba9876543210fedcba9876543210.dir\n"
    )
    r = collect_run(run)
    assert r["epochs"] == 3 and r["args"]["imgsz"] == 320 and r["args"]["lr0"] == 0.01
    assert r["metrics"]["metrics/mAP50(B)"] == pytest.approx(0.5)
    assert r["metrics"]["epoch"] == 3
    d = collect_dataset(data)
    assert d["images"] == 6 and d["labels"] == 6 and len(d["files"]) == 12
    img = "images/train/train_00000.jpg"
    assert d["files"][img] == sha256_file(root / img)
    assert d["files"]["labels/val/val_00001.txt"] == sha256_file(root / "labels/val/val_00001.txt")
    assert d["digest"] == manifest_digest(d["files"])
    assert d["names"] == {"0": "circle", "1": "square", "2": "triangle", "3": "star", "4": "cross"}
    md5s = {o["md5"] for entry in d["dvc"] for o in entry["outs"]}
    assert md5s == {"0123456789abcdef0123456789abcdef.dir", "fedcba9876543210fedcba9876543210.dir"}
    assert collect_dataset(data)["digest"] == d["digest"]  # same files, same digest


def test_diff_names_files_added_removed_changed(tmp_path: Path, trained: tuple[Path, Path]) -> None:
    run, data = trained
    onnx = V2 / "model.onnx"
    a = collect(onnx=onnx, weights=V2 / "model.pt", run_dir=run, cwd=tmp_path)
    assert a["dataset"]["data_yaml"] == str(data.resolve())  # found through args.yaml
    assert a["weights"]["sha256"] == sha256_file(V2 / "model.pt")
    assert a["onnx"]["sha256"] == sha256_file(onnx) and a["onnx"]["opset"] >= 11
    assert a["versions"]["onnx"] and a["git"] is None  # tmp_path is no git work tree
    root = data.parent
    (root / "labels/val/val_00000.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (root / "images/train/train_00003.jpg").unlink()
    (root / "labels/train/train_00003.txt").unlink()
    (root / "images/val/extra.jpg").write_bytes((root / "images/val/val_00001.jpg").read_bytes())
    run2 = _run(tmp_path / "runs" / "train2", data, map50=0.6, epochs=4, lr0=0.02)
    b = collect(onnx=onnx, run_dir=run2, data=data, export_args={"imgsz": 320}, cwd=tmp_path)
    d = diff(a, b)
    assert d["dataset"]["added"] == ["images/val/extra.jpg"]
    assert d["dataset"]["removed"] == [
        "images/train/train_00003.jpg",
        "labels/train/train_00003.txt",
    ]
    assert d["dataset"]["changed"] == ["labels/val/val_00000.txt"]
    assert d["dataset"]["digest"][0] != d["dataset"]["digest"][1]
    assert d["metrics"]["metrics/mAP50(B)"] == [pytest.approx(0.5), pytest.approx(0.6)]
    assert d["args"]["lr0"] == [0.01, 0.02] and d["args"]["epochs"] == [3, 4]
    assert "imgsz" not in d["args"] and d["export"] == {"imgsz": [None, 320]}
    assert d["weights"][1] is None
    same = diff(a, a)
    assert not same["metrics"] and not same["args"] and not same["dataset"]["changed"]


def test_git_commit_of_the_run(tmp_path: Path, trained: tuple[Path, Path]) -> None:
    run, _ = trained
    subprocess.run([*GIT, "init", "-q", str(tmp_path)], check=True)
    subprocess.run([*GIT, "-C", str(tmp_path), "add", "runs"], check=True)
    subprocess.run([*GIT, "-C", str(tmp_path), "commit", "-qm", "x"], check=True)
    head = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"], check=True,
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    doc = collect(onnx=V2 / "model.onnx", run_dir=run, data=None, cwd=Path("/"))
    assert doc["git"] == {"commit": head, "dirty": False}
    (run / "args.yaml").write_text((run / "args.yaml").read_text() + "patience: 5\n")
    assert collect(onnx=V2 / "model.onnx", run_dir=run, cwd=Path("/"))["git"]["dirty"] is True


def test_bad_inputs_are_one_line_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="not an Ultralytics run"):
        collect_run(tmp_path / "empty")
    with pytest.raises(ConfigError, match="does not exist"):
        collect_run(tmp_path / "nope")
    (tmp_path / "data.yaml").write_text("- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        collect_dataset(tmp_path / "data.yaml")
    (tmp_path / "data.yaml").write_text("path: .\ntrain: images/train\n")
    with pytest.raises(ConfigError, match="no images"):
        collect_dataset(tmp_path / "data.yaml")


def test_push_show_diff_through_cli(
    client: httpx.Client, tmp_path: Path, trained: tuple[Path, Path]
) -> None:
    env = {**os.environ, "EDGEFLEET_URL": str(client.base_url).rstrip("/")}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "edgefleet", *args], capture_output=True, text=True,
            env=env, timeout=120, check=False, cwd=tmp_path,
        )  # fmt: skip

    run, data = trained
    first = cli("model", "push", "shapes", str(V1 / "model.onnx"), "--version", "v1",
                "--run-dir", str(run), "--weights", str(V1 / "model.pt"))  # fmt: skip
    assert first.returncode == 0, first.stderr
    (data.parent / "labels/val/val_00000.txt").write_text("1 0.5 0.5 0.3 0.3\n")
    run2 = _run(tmp_path / "runs" / "train2", data, map50=0.7, lr0=0.005)
    second = cli("model", "push", "shapes", str(V2 / "model.onnx"), "--version", "v2",
                 "--run-dir", str(run2), "--data", str(data))  # fmt: skip
    assert second.returncode == 0, second.stderr

    got = client.get("/v1/models/shapes/versions/v1/lineage").json()
    doc = got["lineage"]
    assert got["sha256"] == doc["onnx"]["sha256"] == sha256_file(V1 / "model.onnx")
    assert doc["pushed_by"] and doc["weights"]["sha256"] == sha256_file(V1 / "model.pt")
    assert doc["dataset"]["images"] == 6 and doc["run"]["args"]["lr0"] == 0.01

    shown = cli("model", "show", "shapes:v1")
    assert shown.returncode == 0, shown.stderr
    assert f"weights             model.pt sha256 {doc['weights']['sha256'][:12]}" in shown.stdout
    assert f"digest            {doc['dataset']['digest'][:12]} (6 images, 6 labels)" in shown.stdout
    assert "metrics/mAP50(B)  0.5000" in shown.stdout and "model card: -" in shown.stdout

    diffed = cli("model", "diff", "shapes:v1", "shapes:v2")
    assert diffed.returncode == 0, diffed.stderr
    assert "  lr0: 0.01 -> 0.005" in diffed.stdout
    assert "  changed: 1 files\n    labels/val/val_00000.txt" in diffed.stdout
    assert "  metrics/mAP50(B): 0.5 -> 0.7" in diffed.stdout
    as_json = json.loads(cli("model", "diff", "shapes:v1", "shapes:v2", "--json").stdout)
    assert as_json["dataset"]["changed"] == ["labels/val/val_00000.txt"]

    missing = cli("model", "diff", "shapes:v1", "shapes:v9")
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    no_run = cli("model", "push", "shapes", str(V2 / "model.onnx"), "--run-dir", "/nonexistent")
    assert no_run.returncode == 1 and "run directory /nonexistent does not exist" in no_run.stderr


def test_api_refuses_lineage_of_other_bytes(client: httpx.Client) -> None:
    wrong = json.dumps({"onnx": {"sha256": "0" * 64}}).encode()
    with (V2 / "model.onnx").open("rb") as f:
        answer = client.post("/v1/models/shapes/versions", files={
            "file": ("model.onnx", f, "application/octet-stream"),
            "lineage": ("lineage.json", wrong, "application/json")})  # fmt: skip
    assert answer.status_code in (400, 422) and "lineage describes" in answer.text
    with (V2 / "model.onnx").open("rb") as f:
        answer = client.post("/v1/models/shapes/versions", files={
            "file": ("model.onnx", f, "application/octet-stream"),
            "lineage": ("lineage.json", b"[1]", "application/json")})  # fmt: skip
    assert answer.status_code in (400, 422) and "JSON object" in answer.text
    with (V2 / "model.onnx").open("rb") as f:
        files = {"file": ("model.onnx", f, "application/octet-stream")}
        plain = client.post("/v1/models/shapes/versions", files=files)
    assert plain.status_code == 200
    assert client.get("/v1/models/shapes/versions/v1/lineage").status_code == 404


def test_resigned_copy_has_its_sources_lineage(
    client: httpx.Client, services: Services, tmp_path: Path
) -> None:
    """A rollback's ``v1-rbN`` runs v1's bytes: ``model show`` of it shows v1's lineage."""
    from edgefleet.controller.registry import get_version
    from edgefleet.controller.rollouts.releases import resign
    from sqlmodel import Session

    onnx = V2 / "model.onnx"
    doc = json.dumps(collect(onnx=onnx, weights=V2 / "model.pt", cwd=tmp_path)).encode()
    with onnx.open("rb") as f:
        answer = client.post("/v1/models/shapes/versions", files={
            "file": ("model.onnx", f, "application/octet-stream"),
            "lineage": ("lineage.json", doc, "application/json")})  # fmt: skip
    assert answer.status_code == 200, answer.text
    with Session(services.engine) as session:
        old = get_version(session, "shapes", "v1")
        label = resign(session, services.signing, services.store.path_for, old).version
        session.commit()
    got = client.get(f"/v1/models/shapes/versions/{label}/lineage").json()
    assert label == "v1-rb2" and got["from"] == "v1" and got["version"] == label
    assert got["lineage"]["weights"]["sha256"] == sha256_file(V2 / "model.pt")
