"""``edgefleet model push``: an ONNX (or a .pt, exported here, or a version of an MLflow
registry) uploaded with its lineage, signed by the controller or here with the publisher's
key, and with ``--validation`` its model card."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from edgefleet.cli.gate import push_verdict
from edgefleet.cli.output import say
from edgefleet.shared.errors import ArtifactError, ConfigError, EdgefleetError

if TYPE_CHECKING:
    from edgefleet.cli.client import ControllerClient, Files


@dataclass(frozen=True)
class Provenance:
    """Where a pushed model came from, for its lineage (controller/lineage.py)."""

    run_dir: Path | None = None
    data: Path | None = None
    weights: Path | None = None


def push(
    name: Annotated[str, typer.Argument(metavar="NAME", help="model name")],
    file: Annotated[Path | None, typer.Argument(
        metavar="FILE", help="the .onnx or .pt (or give --from-mlflow)")] = None,
    version: Annotated[str | None, typer.Option(
        "--version", help="version label (default: next vN)")] = None,
    validation: Annotated[Path | None, typer.Option(
        "--validation", metavar="DIR",
        help="images (YOLO labels optional) for the model card and drift baseline")] = None,
    key: Annotated[Path | None, typer.Option(
        "--key", metavar="FILE",
        help="the publisher's models key (PEM): sign here, upload signed metadata")] = None,
    run_dir: Annotated[Path | None, typer.Option(
        "--run-dir", metavar="DIR",
        help="the Ultralytics run that trained it (args.yaml, results.csv)")] = None,
    data: Annotated[Path | None, typer.Option(
        "--data", metavar="DATA_YAML",
        help="the data.yaml it was trained on (default: the run's args.yaml data)")] = None,
    weights: Annotated[Path | None, typer.Option(
        "--weights", metavar="FILE",
        help="the .pt this ONNX was exported from elsewhere (its digest is recorded)")] = None,
    from_mlflow: Annotated[str | None, typer.Option(
        "--from-mlflow", metavar="MODEL_URI",
        help="a registered version, models:/NAME/VERSION or models:/NAME@ALIAS, from the "
        "registry at $MLFLOW_TRACKING_URI (its run's params, metrics and tags go into the "
        "lineage; needs the mlflow extra)")] = None,
) -> None:  # fmt: skip
    """Upload and sign a model version (.onnx or .pt)."""
    from edgefleet.cli.client import ControllerClient

    prov = Provenance(run_dir, data, weights)
    given = _push_source(file, from_mlflow, prov)
    _check_push(name, version, validation, prov)
    with tempfile.TemporaryDirectory(prefix="edgefleet-export-") as tmp, \
            ControllerClient.from_env() as api:  # fmt: skip
        src, beside, mlflow = (given, None, None) if given else _from_mlflow(
            from_mlflow or "", Path(tmp) / "mlflow")  # fmt: skip
        suffix = src.suffix.lower()
        if weights and suffix == ".pt":
            raise ConfigError(
                "--weights is for an ONNX exported elsewhere; a .pt is its own weights"
            )
        export_args: dict[str, Any] = {}
        onnx_path = export_pt(src, Path(tmp), export_args) if suffix == ".pt" else src
        pt = src if suffix == ".pt" else beside
        lineage = _lineage(onnx_path, pt, prov, export_args, mlflow)
        if key:
            row = _upload_signed(api, name, onnx_path, version, key=key, lineage=lineage)
        else:
            row = _upload(api, name, onnx_path, version, lineage)
        print(f"pushed {row['name']}:{row['version']} (release {row['release']}, "
              f"sha256 {row['sha256'][:12]}, {row['length']} bytes)")  # fmt: skip
        if validation:
            card = push_card(api, row["name"], row["version"], onnx_path, validation)
            print("\n".join(card_lines(card)))
    push_verdict(row)


def _push_source(file: Path | None, from_mlflow: str | None, prov: Provenance) -> Path | None:
    """FILE, checked; None when the version comes from ``--from-mlflow``."""
    if file and from_mlflow:
        raise ConfigError("give FILE or --from-mlflow, not both")
    if from_mlflow:
        if prov.run_dir:
            raise ConfigError("--run-dir and --from-mlflow both name the training run; give one")
        return None
    if not file:
        raise ConfigError("model push needs FILE (.onnx or .pt) or --from-mlflow MODEL_URI")
    if not file.is_file():
        raise ConfigError(f"no such file: {file}")
    if file.suffix.lower() not in (".onnx", ".pt"):
        raise ConfigError(f"cannot push {file.name}: expected a .onnx or .pt file")
    return file


def _from_mlflow(uri: str, dest: Path) -> tuple[Path, Path | None, dict[str, Any]]:
    """The registered version at $MLFLOW_TRACKING_URI, downloaded under ``dest``: the file
    to push, the ``.pt`` beside it and the lineage's ``mlflow`` section."""
    from edgefleet.controller.mlflow_import import fetch, parse_model_uri

    ref = parse_model_uri(uri)
    tracking_uri = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if not tracking_uri:
        raise ConfigError("--from-mlflow needs MLFLOW_TRACKING_URI: the tracking server or "
                          "store that holds the model registry")  # fmt: skip
    # MLflow retries a refused connection for minutes by default (its servers rate-limit);
    # a push fails within seconds unless the operator asks for more.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    say(f"fetching {ref} from MLflow ...")
    got = fetch(ref, tracking_uri, dest)
    return got.file, got.weights, got.lineage


def _check_push(name: str, version: str | None, validation: Path | None, prov: Provenance) -> None:
    """The rest of what a push needs, checked before a byte is sent."""
    from edgefleet.controller.registry import check_label

    check_label("model name", name)
    if version is not None:  # an empty --version is refused, not read as "the next vN"
        check_label("version", version)
    if validation and not validation.is_dir():
        raise ConfigError(f"validation folder {validation} does not exist")
    for value, what in ((prov.run_dir, "run directory"), (prov.data, "dataset file"),
                        (prov.weights, "weights file")):  # fmt: skip
        if value and not value.exists():
            raise ConfigError(f"{what} {value} does not exist")


def export_pt(pt: Path, out_dir: Path, used: dict[str, Any] | None = None) -> Path:
    """Export an Ultralytics checkpoint to ONNX at the image size it was trained with;
    the export arguments go into ``used`` (for the lineage)."""
    # Ultralytics logs to stdout; keep ours for the result line.
    with contextlib.redirect_stdout(sys.stderr):
        try:
            from ultralytics import YOLO
        except ImportError as e:
            raise ConfigError(
                "pushing a .pt needs the export extra: pip install 'edgefleet[export]' "
                "(or export to .onnx yourself and push that)"
            ) from e
        # Ultralytics writes the export beside the checkpoint: work on a copy of ours.
        local = out_dir / pt.name
        shutil.copyfile(pt, local)
        try:
            model = YOLO(str(local))
            imgsz = model.overrides.get("imgsz") or 640
            exported = model.export(format="onnx", imgsz=imgsz)
            if used is not None:
                used.update(format="onnx", imgsz=imgsz)
        except Exception as e:  # ultralytics raises anything from torch to its own errors
            raise ArtifactError(f"cannot export {pt.name} to ONNX: {e}".splitlines()[0]) from e
    return Path(exported)


def _lineage(
    onnx_path: Path,
    pt: Path | None,
    prov: Provenance,
    export_args: dict[str, Any],
    mlflow: dict[str, Any] | None,
) -> bytes:
    """The lineage document of this push (controller/lineage.py), as the upload's JSON part."""
    from edgefleet.controller.lineage import collect

    doc = collect(onnx=onnx_path, weights=prov.weights or pt, run_dir=prov.run_dir,
                  data=prov.data, export_args=export_args, mlflow=mlflow)  # fmt: skip
    return json.dumps(doc).encode()


def _send_file(path: Path, extra: Files, send: Callable[[Files], dict[str, Any]]) -> dict[str, Any]:
    """Upload ``path`` as the ``file`` part beside ``extra``, with a progress bar."""
    from edgefleet.cli.client import CountingReader
    from edgefleet.cli.output import byte_progress

    with path.open("rb") as f, byte_progress("uploading", path.name, path.stat().st_size) as bar:
        files: Files = {"file": (path.name, CountingReader(f, bar.advance),
                                 "application/octet-stream"), **extra}  # fmt: skip
        return send(files)


def _upload(
    api: ControllerClient, name: str, path: Path, version: str | None, lineage: bytes
) -> dict[str, Any]:
    extra: Files = {"lineage": ("lineage.json", lineage, "application/json")}
    return _send_file(path, extra, lambda files: api.push_version(name, files, version))


def _models_metadata(api: ControllerClient) -> bytes:
    """The controller's current ``models`` metadata: timestamp -> snapshot -> models."""
    timestamp = json.loads(api.image_metadata("timestamp.json"))
    try:
        snap_version = int(timestamp["signed"]["meta"]["snapshot.json"]["version"])
        snapshot = json.loads(api.image_metadata(f"{snap_version}.snapshot.json"))
        models_version = int(snapshot["signed"]["meta"]["models.json"]["version"])
    except (KeyError, TypeError, ValueError) as e:
        raise EdgefleetError(f"the controller's image metadata is malformed: {e!r}") from e
    return api.image_metadata(f"{models_version}.models.json")


def _upload_signed(
    api: ControllerClient,
    name: str,
    path: Path,
    version: str | None,
    *,
    key: Path,
    lineage: bytes,
) -> dict[str, Any]:
    """Sign the ``models`` role here with the publisher's key; upload bytes + metadata."""
    from edgefleet.controller.signing.keys import load_signer
    from edgefleet.controller.signing.publisher import sign_models_update
    from edgefleet.shared.hashing import sha256_file

    if not key.is_file():
        raise ConfigError(f"no such key file: {key}")
    signer = load_signer(key, key.with_name(key.name.removesuffix(".pem") + ".pub.json"))
    length, sha = path.stat().st_size, sha256_file(path)
    nxt = api.next_release(name)
    label = version or str(nxt["version"])
    signed = sign_models_update(
        _models_metadata(api), signer, name=name, version=label,
        release=int(nxt["release"]), length=length, sha256=sha,
    )  # fmt: skip
    extra: Files = {
        "metadata": ("models.json", signed, "application/json"),
        "lineage": ("lineage.json", lineage, "application/json"),
    }
    return _send_file(path, extra, lambda files: api.push_signed(name, files, label))


# --- model cards (push --validation, show) ---------------------------------------------


def push_card(
    api: ControllerClient, name: str, version: str, onnx_path: Path, folder: Path
) -> dict[str, Any]:
    """Run the model over ``folder`` (the agent's Detector) and store the card."""
    from edgefleet.controller.cards import build_card

    say(f"validating {name}:{version} on {folder} ...")
    card = build_card(onnx_path, folder, name, version)
    return api.put_card(name, version, card.model_dump(mode="json", by_alias=True))


def card_lines(card: dict[str, Any]) -> list[str]:
    m = card.get("map50")
    lines = [
        f"model card {card['model']}:{card['version']} (created {card['created_at']})",
        f"  validation images   {card['images']} ({card['labelled_images']} labelled)",
        f"  mAP50               {'-' if m is None else f'{m:.3f}'}",
        f"  detections          {card['detections']} above conf {card['conf']}"
        f" ({card['detections_per_frame']:.2f} per frame)",
        "  confidence histogram (all classes):",
        *_bars(card["confidence_edges"], card["confidence_counts"]),
    ]
    for cls, counts in card["per_class_confidence"].items():
        ap = card["ap50_per_class"].get(cls)
        extra = f", AP50 {ap:.3f}" if ap is not None else ""
        lines.append(f"  class {cls}: {sum(counts)} detections{extra}")
    return lines


def _bars(edges: list[float], counts: list[int], width: int = 40) -> list[str]:
    top = max(counts) or 1
    return [
        f"    {edges[i]:.2f}-{edges[i + 1]:.2f} {'#' * round(width * c / top):<{width}} {c}"
        for i, c in enumerate(counts)
        if c
    ]
