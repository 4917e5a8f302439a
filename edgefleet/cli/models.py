"""``edgefleet model push|list|show|diff`` and ``edgefleet model plan push|list|approve``."""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import tempfile
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from edgefleet.cli.base import group
from edgefleet.cli.output import Column, JsonFlag, print_json, say, show_list
from edgefleet.cli.params import numeric_id, parse_target
from edgefleet.shared.errors import ArtifactError, ConfigError, EdgefleetError

if TYPE_CHECKING:
    from edgefleet.cli.client import ControllerClient, Files

app = group("models and versions")
plan_app = group("prebuilt TensorRT plans of a version")
app.add_typer(plan_app, name="plan")

Target = Annotated[str, typer.Argument(metavar="NAME:VERSION", help="a model version")]


@dataclass(frozen=True)
class Provenance:
    """Where a pushed model came from, for its lineage (controller/lineage.py)."""

    run_dir: Path | None = None
    data: Path | None = None
    weights: Path | None = None


# --- model push ------------------------------------------------------------------------


@app.command("push")
def push(
    name: Annotated[str, typer.Argument(help="model name")],
    file: Annotated[Path, typer.Argument(help=".onnx, or an Ultralytics .pt to export")],
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
) -> None:  # fmt: skip
    """Upload and sign a model version (.onnx or .pt)."""
    from edgefleet.cli.client import ControllerClient

    suffix = _check_push(name, file, version, validation, Provenance(run_dir, data, weights))
    with tempfile.TemporaryDirectory(prefix="edgefleet-export-") as tmp, \
            ControllerClient.from_env() as api:  # fmt: skip
        export_args: dict[str, Any] = {}
        onnx_path = export_pt(file, Path(tmp), export_args) if suffix == ".pt" else file
        pt = file if suffix == ".pt" else weights
        lineage = _lineage(onnx_path, pt, Provenance(run_dir, data, weights), export_args)
        if key:
            row = _upload_signed(api, name, onnx_path, version, key=key, lineage=lineage)
        else:
            row = _upload(api, name, onnx_path, version, lineage)
        print(f"pushed {row['name']}:{row['version']} (release {row['release']}, "
              f"sha256 {row['sha256'][:12]}, {row['length']} bytes)")  # fmt: skip
        if validation:
            card = push_card(api, row["name"], row["version"], onnx_path, validation)
            print("\n".join(card_lines(card)))


def _check_push(
    name: str, file: Path, version: str | None, validation: Path | None, prov: Provenance
) -> str:
    """Everything a push needs, checked before a byte is sent; the file's suffix."""
    from edgefleet.controller.registry import check_label

    if not file.is_file():
        raise ConfigError(f"no such file: {file}")
    suffix = file.suffix.lower()
    if suffix not in (".onnx", ".pt"):
        raise ConfigError(f"cannot push {file.name}: expected a .onnx or .pt file")
    check_label("model name", name)
    if version is not None:  # an empty --version is refused, not read as "the next vN"
        check_label("version", version)
    if validation and not validation.is_dir():
        raise ConfigError(f"validation folder {validation} does not exist")
    for value, what in ((prov.run_dir, "run directory"), (prov.data, "dataset file"),
                        (prov.weights, "weights file")):  # fmt: skip
        if value and not value.exists():
            raise ConfigError(f"{what} {value} does not exist")
    if prov.weights and suffix == ".pt":
        raise ConfigError("--weights is for an ONNX exported elsewhere; a .pt is its own weights")
    return suffix


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
    onnx_path: Path, pt: Path | None, prov: Provenance, export_args: dict[str, Any]
) -> bytes:
    """The lineage document of this push (controller/lineage.py), as the upload's JSON part."""
    from edgefleet.controller.lineage import collect

    doc = collect(onnx=onnx_path, weights=pt, run_dir=prov.run_dir, data=prov.data,
                  export_args=export_args)  # fmt: skip
    return json.dumps(doc).encode()


def _send_file(path: Path, extra: Files, send: Any) -> dict[str, Any]:
    """Upload ``path`` as the ``file`` part beside ``extra``, with a progress bar."""
    from edgefleet.cli.client import CountingReader
    from edgefleet.cli.output import byte_progress

    with path.open("rb") as f, byte_progress("uploading", path.name, path.stat().st_size) as bar:
        files: Files = {"file": (path.name, CountingReader(f, bar.advance),
                                 "application/octet-stream"), **extra}  # fmt: skip
        answer: dict[str, Any] = send(files)
    return answer


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


# --- list, show, diff ------------------------------------------------------------------

VERSION_COLUMNS = (
    Column("MODEL", lambda v: v["model"]),
    Column("VERSION", lambda v: v["version"]),
    Column("RELEASE", lambda v: str(v["release"])),
    Column("SHA256", lambda v: v["sha256"][:12]),
    Column("BYTES", lambda v: str(v["length"])),
    Column("CREATED", lambda v: v["created_at"]),
)


@app.command("list")
def list_models(as_json: JsonFlag = False) -> None:
    """List models and their versions."""
    from edgefleet.cli.client import ControllerClient

    with ControllerClient.from_env() as api:
        models = api.models()
    if as_json:
        print_json(models)
        return
    rows = [{**v, "model": m["name"]} for m in models for v in m["versions"]]
    show_list(rows, VERSION_COLUMNS, as_json=False)


@app.command("show")
def show(target: Target, as_json: JsonFlag = False) -> None:
    """Print a version's lineage and model card."""
    from edgefleet.cli.client import ControllerClient
    from edgefleet.controller.lineage import lines

    name, version = parse_target(target)
    with ControllerClient.from_env() as api:
        row = _version(api, name, version)
        lineage = api.lineage(name, version)
        card = api.card(name, version)
    if as_json:
        print_json({"version": row, "lineage": lineage, "card": card})
        return
    print(f"{name}:{version} release {row['release']} sha256 {row['sha256'][:12]}"
          f" ({row['length']} bytes, pushed {row['created_at']})")  # fmt: skip
    if lineage is None:
        print("  lineage             - (pushed without it)")
    else:
        print("\n".join(lines(lineage)))
    print("\n".join(card_lines(card)) if card else "model card: - (push with --validation DIR)")


def _version(api: ControllerClient, name: str, version: str) -> dict[str, Any]:
    for row in api.versions(name):
        if row["version"] == version:
            return row
    raise ConfigError(f"model {name!r} has no version {version!r}")


@app.command("diff")
def diff(
    a: Annotated[str, typer.Argument(metavar="NAME:A", help="the older version")],
    b: Annotated[str, typer.Argument(metavar="NAME:B", help="the newer version")],
    as_json: JsonFlag = False,
) -> None:
    """Compare two versions' lineage: metrics, args, dataset."""
    from edgefleet.cli.client import ControllerClient
    from edgefleet.controller.lineage import diff as lineage_diff
    from edgefleet.controller.lineage import diff_lines

    docs = []
    with ControllerClient.from_env() as api:
        for target in (a, b):
            name, version = parse_target(target)
            docs.append(api.required_lineage(name, version))
    d = lineage_diff(docs[0], docs[1])
    if as_json:
        print_json(d)
    else:
        print(f"{a} -> {b}")
        print("\n".join(diff_lines(d)))


# --- TensorRT plans --------------------------------------------------------------------


class Precision(str, Enum):
    fp32 = "fp32"
    fp16 = "fp16"
    int8 = "int8"


@plan_app.command("push")
def plan_push(
    target: Target,
    file: Annotated[Path, typer.Argument(help="the serialized engine (.plan / .engine)")],
    compute_capability: Annotated[str, typer.Option(
        "--compute-capability", help='the GPU\'s, e.g. "8.7"')],
    tensorrt: Annotated[str, typer.Option(
        "--tensorrt", help='the TensorRT it was built with: "10.3.0"')],
    precision: Annotated[Precision, typer.Option(
        "--precision", help="the engine's precision")] = Precision.fp16,
) -> None:  # fmt: skip
    """Upload and sign a plan built for one GPU and TensorRT."""
    from edgefleet.cli.client import ControllerClient

    name, version = parse_target(target)
    if not file.is_file():
        raise ArtifactError(f"no such plan file: {file}")
    fields = {"compute_capability": compute_capability, "tensorrt": tensorrt,
              "precision": precision.value}  # fmt: skip
    with ControllerClient.from_env() as api:
        row = api.push_plan(name, version, file, fields)
    print(f"signed {row['target']} (plan {row['id']}, {row['length']} bytes)")


PLAN_COLUMNS = (
    Column("ID", lambda r: str(r["id"])),
    Column("MODEL", lambda r: r["name"]),
    Column("VERSION", lambda r: r["version"]),
    Column("GPU", lambda r: f"sm {r['compute_capability']}"),
    Column("TENSORRT", lambda r: r["tensorrt"]),
    Column("PRECISION", lambda r: r["precision"]),
    Column("STATE", lambda r: r["state"]),
    Column("SOURCE", lambda r: r["source"]),
    Column("SHA256", lambda r: r["sha256"][:12]),
)


@plan_app.command("list")
def plan_list(
    target: Annotated[str | None, typer.Argument(
        metavar="NAME:VERSION", help="only this version's plans")] = None,
    as_json: JsonFlag = False,
) -> None:  # fmt: skip
    """Plans, signed and shared by devices (pending)."""
    from edgefleet.cli.client import ControllerClient

    params = {}
    if target:
        params["model"], params["version"] = parse_target(target)
    with ControllerClient.from_env() as api:
        show_list(api.plans(params), PLAN_COLUMNS, as_json)


@plan_app.command("approve")
def plan_approve(plan_id: Annotated[str, typer.Argument(metavar="ID", help="plan id")]) -> None:
    """Sign a plan a device shared."""
    from edgefleet.cli.client import ControllerClient

    with ControllerClient.from_env() as api:
        row = api.approve_plan(numeric_id(plan_id, "plan"))
    print(f"signed {row['target']}: devices of sm {row['compute_capability']} with TensorRT "
          f"{row['tensorrt']} ({row['precision']}) get it from now on")  # fmt: skip
