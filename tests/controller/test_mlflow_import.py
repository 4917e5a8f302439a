"""``model push NAME --from-mlflow models:/NAME/VERSION`` against a real MLflow tracking store
(SQLite, file artifacts) made here: runs logged with parameters, metrics, tags and the
shipped ONNX, registered as model versions, pushed to a real controller, then read back
with ``model show`` and ``model diff`` as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from edgefleet.controller.mlflow_import import ModelRef, fetch, parse_model_uri, redact
from edgefleet.shared.errors import ArtifactError, ConfigError, NotFoundError, TransportError
from edgefleet.shared.hashing import sha256_file

from edgefleet.cli import main
from edgefleet.devbroker import free_port

pytest.importorskip("mlflow", reason="needs the mlflow extra: pip install '.[mlflow]'")

REPO = Path(__file__).resolve().parents[2]
V1 = REPO / "models" / "shapes" / "v1"
V2 = REPO / "models" / "shapes" / "v2"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
# MLflow's SQL store uses a loader strategy SQLAlchemy 2.1 deprecates: theirs to change.
SQLALCHEMY_NOLOAD = "ignore:The ``noload`` loader strategy:DeprecationWarning"
pytestmark = pytest.mark.filterwarnings(SQLALCHEMY_NOLOAD)


@dataclass(frozen=True)
class Registry:
    uri: str
    runs: list[str]  # run ids of versions 1, 2 and 3


def _log_version(client: Any, experiment: str, params: dict[str, object],
                 metrics: dict[str, float], files: list[Path]) -> str:  # fmt: skip
    tags = {"team": "vision", "mlflow.source.git.commit": COMMIT}
    run = client.create_run(experiment, run_name=f"train-{params.get('lr0')}", tags=tags)
    run_id = run.info.run_id
    for key, value in params.items():
        client.log_param(run_id, key, value)
    for step in range(3):  # a history: the lineage keeps the last value
        for key, value in metrics.items():
            client.log_metric(run_id, key, value if step == 2 else value / 4, step=step)
    for f in files:
        client.log_artifact(run_id, str(f), artifact_path="model")
    client.set_terminated(run_id)
    client.create_model_version("shapes", f"runs:/{run_id}/model", run_id=run_id)
    return run_id


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    """Versions 1 (v1's ONNX and .pt), 2 (v2's ONNX, alias ``champion``), 3 (no model)."""
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        client = MlflowClient(tracking_uri=uri)
        exp = client.create_experiment("shapes-detector", artifact_location=(root / "art").as_uri())
        client.create_registered_model("shapes")
        notes = root / "notes.txt"
        notes.write_text("no model here\n")
        runs = [
            _log_version(client, exp, {"lr0": 0.01, "epochs": 3, "imgsz": 320},
                         {"metrics/mAP50B": 0.5, "val/box_loss": 1.2},
                         [V1 / "model.onnx", V1 / "model.pt"]),
            _log_version(client, exp, {"lr0": 0.005, "epochs": 3, "imgsz": 320},
                         {"metrics/mAP50B": 0.7, "val/box_loss": 1.1}, [V2 / "model.onnx"]),
            _log_version(client, exp, {"lr0": 0.02}, {}, [notes]),
        ]  # fmt: skip
        client.set_registered_model_alias("shapes", "champion", "2")
    return Registry(uri, runs)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """``edgefleet ARGV`` in this process (the interpreter start costs seconds here)."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def test_push_show_diff_from_mlflow(
    client: httpx.Client, registry: Registry, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    env = {"EDGEFLEET_URL": str(client.base_url).rstrip("/"), "MLFLOW_TRACKING_URI": registry.uri}
    first = subprocess.run(
        [sys.executable, "-m", "edgefleet", "model", "push", "shapes", "--from-mlflow",
         "models:/shapes/1", "--version", "v1"], capture_output=True, text=True,
        env={**os.environ, **env}, timeout=180, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    assert "pushed shapes:v1" in first.stdout and "Traceback" not in first.stderr
    for key, value in {**env, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2"}.items():
        monkeypatch.setenv(key, value)
    _run(capsys, "model", "push", "shapes", "--from-mlflow", "models:/shapes@champion")

    doc = json.loads(_run(capsys, "model", "show", "shapes:v1", "--json"))["lineage"]
    ml = doc["mlflow"]
    assert doc["onnx"]["sha256"] == sha256_file(V1 / "model.onnx")
    assert doc["weights"] == {"file": "model.pt", "sha256": sha256_file(V1 / "model.pt")}
    assert doc["git"] == {"commit": COMMIT, "dirty": None} and "run" not in doc
    assert ml["tracking_uri"] == registry.uri and ml["file"] == "model.onnx"
    assert ml["model"]["name"] == "shapes" and ml["model"]["version"] == "1"
    assert ml["model"]["source"] == f"runs:/{registry.runs[0]}/model"
    run = ml["run"]
    assert run["id"] == registry.runs[0] and run["experiment"] == "shapes-detector"
    assert run["params"] == {"epochs": "3", "imgsz": "320", "lr0": "0.01"}
    assert run["metrics"] == {"metrics/mAP50B": 0.5, "val/box_loss": 1.2}
    assert run["tags"]["team"] == "vision" and run["artifact_uri"].startswith("file://")

    text = _run(capsys, "model", "show", "shapes:v2")
    assert "  mlflow model        shapes version 2 (@champion)" in text
    assert f"    run               {registry.runs[1]} (train-0.005)" in text
    assert "    param lr0         0.005" in text
    assert "    metric metrics/mAP50B 0.7" in text
    assert "    tag team          vision" in text and "mlflow.user" not in text

    diffed = _run(capsys, "model", "diff", "shapes:v1", "shapes:v2")
    assert f"mlflow run: {registry.runs[0]} -> {registry.runs[1]}" in diffed
    assert "  lr0: 0.01 -> 0.005" in diffed
    assert "  metrics/mAP50B: 0.5 -> 0.7" in diffed and "epochs" not in diffed


def test_registry_errors_are_one_line(registry: Registry, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match=r"models:/shapes/9 is not in the MLflow registry"):
        fetch(ModelRef("shapes", "9"), registry.uri, tmp_path / "a")
    with pytest.raises(NotFoundError, match=r"models:/nope@champion is not in"):
        fetch(ModelRef("nope", alias="champion"), registry.uri, tmp_path / "b")
    with pytest.raises(NotFoundError, match=r"models:/shapes@gone is not in"):
        fetch(ModelRef("shapes", alias="gone"), registry.uri, tmp_path / "c")
    with pytest.raises(ArtifactError, match=r"models:/shapes/3 has no .onnx \(nor .pt"):
        fetch(ModelRef("shapes", "3"), registry.uri, tmp_path / "d")
    with pytest.raises(TransportError, match="no MLflow database at"):
        fetch(ModelRef("shapes", "1"), f"sqlite:///{tmp_path / 'typo.db'}", tmp_path / "e")
    assert not (tmp_path / "typo.db").exists()
    (tmp_path / "junk.db").write_text("not sqlite\n")
    with pytest.raises(TransportError, match=r"junk.db: \(sqlite3.DatabaseError\) file is not a"):
        fetch(ModelRef("shapes", "1"), f"sqlite:///{tmp_path / 'junk.db'}", tmp_path / "g")
    with pytest.raises(TransportError, match="no MLflow store folder at"):
        fetch(ModelRef("shapes", "1"), str(tmp_path / "mlruns"), tmp_path / "f")


def test_unreachable_server_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    uri = f"http://someone:secret@127.0.0.1:{free_port()}"
    refused = r"^MLflow at http://someone:\*\*\*@127.0.0.1:\d+: cannot connect: Connection refused$"
    with pytest.raises(TransportError, match=refused) as e:
        fetch(ModelRef("shapes", "1"), uri, tmp_path)
    assert "secret" not in str(e.value) and "\n" not in str(e.value)


def test_cli_refusals(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("EDGEFLEET_URL", f"http://127.0.0.1:{free_port()}")  # never reached
    push = ["model", "push", "shapes"]
    cases = [
        ([*push, str(V1 / "model.onnx"), "--from-mlflow", "models:/shapes/1"],
         "give FILE or --from-mlflow, not both"),
        (push, "model push needs FILE (.onnx or .pt) or --from-mlflow MODEL_URI"),
        ([*push, "--from-mlflow", "models:/shapes/1"], "--from-mlflow needs MLFLOW_TRACKING_URI"),
        ([*push, "--from-mlflow", "runs:/abc/model"], "expected models:/NAME/VERSION"),
        ([*push, "--from-mlflow", "models:/shapes/1", "--run-dir", str(tmp_path)],
         "--run-dir and --from-mlflow both name the training run"),
    ]  # fmt: skip
    for argv, message in cases:
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


def test_without_the_extra(
    registry: Registry, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Where mlflow is not installed (importing it fails), the push says which extra."""
    monkeypatch.setitem(sys.modules, "mlflow", None)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry.uri)
    assert main(["model", "push", "shapes", "--from-mlflow", "models:/shapes/1"]) == 1
    err = capsys.readouterr().err
    assert err.endswith("needs the 'mlflow' extra: pip install 'edgefleet[mlflow]'\n"), err


def test_model_uris_and_redaction() -> None:
    assert parse_model_uri("models:/shapes/12") == ModelRef("shapes", "12")
    assert parse_model_uri("models:/shapes@champion") == ModelRef("shapes", alias="champion")
    assert str(ModelRef("shapes", alias="a")) == "models:/shapes@a"
    for bad in ("models:/shapes", "models:/shapes/latest", "runs:/x/model", "models:/a/1/2"):
        with pytest.raises(ConfigError, match="expected models:/NAME/VERSION"):
            parse_model_uri(bad)
    assert redact("https://u:pw@host:5000/x") == "https://u:***@host:5000/x"
    assert redact("sqlite:////tmp/m.db") == "sqlite:////tmp/m.db"
