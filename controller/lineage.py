"""Lineage of a model version: where its bytes came from, collected from files at push.

Pure functions over the publisher's files (no controller, no network): the source weights'
digest, the Ultralytics run directory (``args.yaml``, ``results.csv`` and its last row as
the final metrics), the dataset (``data.yaml``, a manifest of every image and label file
with its sha256, and the digests DVC recorded in a ``.dvc`` or ``dvc.lock`` file beside
it), the git commit of the training code, the export arguments and the Ultralytics, ONNX
and opset versions; for a version imported from an MLflow registry, the ``mlflow`` section
(controller/mlflow_import.py: the registered version, its run's parameters, metrics and
tags). :func:`diff` compares two lineages; :func:`lines` and
:func:`diff_lines` print them. The controller stores the document on the version
(``model_version.lineage``) and adds ``pushed_by`` from the authenticated caller.
"""

from __future__ import annotations

import csv
import hashlib
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from edgefleet.shared.errors import ConfigError
from edgefleet.shared.hashing import sha256_file
from edgefleet.shared.yaml_file import read_yaml

SCHEMA = 1
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
SPLITS = ("train", "val", "test")
DVC_LOOKUP_LEVELS = 3  # folders above the dataset searched for dvc.lock / <dataset>.dvc


def collect(
    *,
    onnx: Path,
    weights: Path | None = None,
    run_dir: Path | None = None,
    data: Path | None = None,
    export_args: dict[str, Any] | None = None,
    cwd: Path | None = None,
    mlflow: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The lineage document of one push. ``data`` defaults to the run's ``args.yaml``
    ``data`` entry when that file exists; the git commit is taken from the run directory,
    else from ``cwd``. ``mlflow`` is the registered version it came from
    (controller/mlflow_import.py); its git commit is the one the MLflow run recorded, if
    any, never ``cwd``'s."""
    doc: dict[str, Any] = {"schema": SCHEMA, "onnx": {"sha256": sha256_file(onnx),
                                                      "opset": onnx_opset(onnx)}}  # fmt: skip
    if weights is not None:
        if not weights.is_file():
            raise ConfigError(f"weights file {weights} does not exist")
        doc["weights"] = {"file": weights.name, "sha256": sha256_file(weights)}
    run = collect_run(run_dir) if run_dir is not None else None
    if run is not None:
        doc["run"] = run
        if data is None and isinstance(run["args"].get("data"), str):
            guess = Path(run["args"]["data"])
            data = guess if guess.is_file() else None
    if data is not None:
        doc["dataset"] = collect_dataset(data)
    commit = git_commit(run_dir) if run_dir is not None else None
    if mlflow is not None:
        doc["mlflow"] = mlflow
        doc["git"] = commit or _mlflow_git(mlflow)
    else:
        doc["git"] = commit or git_commit(cwd or Path.cwd())
    doc["export"] = dict(export_args or {})
    doc["versions"] = tool_versions()
    return doc


def collect_run(run_dir: Path) -> dict[str, Any]:
    """``args.yaml`` as written by Ultralytics, and ``results.csv``'s last row."""
    if not run_dir.is_dir():
        raise ConfigError(f"run directory {run_dir} does not exist")
    args_file = run_dir / "args.yaml"
    args: dict[str, Any] = {}
    if args_file.is_file():
        raw = read_yaml(args_file)
        if not isinstance(raw, dict):
            raise ConfigError(f"{args_file}: not a mapping of training arguments")
        args = {str(k): _plain(v) for k, v in raw.items()}
    results = run_dir / "results.csv"
    metrics, epochs = _final_metrics(results) if results.is_file() else ({}, 0)
    if not args and not metrics:
        raise ConfigError(
            f"{run_dir} has neither args.yaml nor results.csv: not an Ultralytics run"
        )
    return {
        "dir": str(run_dir.resolve()),
        "args": args,
        "args_sha256": sha256_file(args_file) if args_file.is_file() else None,
        "results_sha256": sha256_file(results) if results.is_file() else None,
        "epochs": epochs,
        "metrics": metrics,
    }


def _final_metrics(path: Path) -> tuple[dict[str, float], int]:
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = [{(k or "").strip(): (v or "").strip() for k, v in r.items()}
                    for r in csv.DictReader(f)]  # fmt: skip
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ConfigError(f"{path}: cannot read as CSV: {e}") from e
    if not rows:
        return {}, 0
    out: dict[str, float] = {}
    for key, value in rows[-1].items():
        try:
            out[key] = float(value)
        except ValueError:
            continue
    return out, len(rows)


def collect_dataset(data_yaml: Path) -> dict[str, Any]:
    """``data.yaml``, every image and label file under its splits with its sha256, one
    digest over that manifest, and DVC's own digests when the dataset is tracked by DVC."""
    if not data_yaml.is_file():
        raise ConfigError(f"dataset file {data_yaml} does not exist")
    raw = read_yaml(data_yaml)
    if not isinstance(raw, dict):
        raise ConfigError(f"{data_yaml}: not an Ultralytics data.yaml (expected a mapping)")
    root = Path(str(raw.get("path") or data_yaml.parent))
    if not root.is_absolute():
        root = data_yaml.parent / root
    files: dict[str, str] = {}
    for split in SPLITS:
        for entry in _as_list(raw.get(split)):
            images = root / entry
            for path in _images(images):
                files[path.relative_to(root).as_posix()] = sha256_file(path)
                label = _label_of(path)
                if label is not None:
                    files[label.relative_to(root).as_posix()] = sha256_file(label)
    if not files:
        raise ConfigError(f"{data_yaml}: no images under its train/val/test entries in {root}")
    names = raw.get("names")
    return {
        "data_yaml": str(data_yaml.resolve()),
        "data_yaml_sha256": sha256_file(data_yaml),
        "root": str(root.resolve()),
        "names": _plain(names),
        "files": dict(sorted(files.items())),
        "images": sum(1 for p in files if Path(p).suffix.lower() in IMAGE_SUFFIXES),
        "labels": sum(1 for p in files if p.endswith(".txt")),
        "digest": manifest_digest(files),
        "dvc": dvc_digests(root),
    }


def _as_list(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return [str(value)]


def _images(entry: Path) -> list[Path]:
    if entry.is_dir():
        return sorted(p for p in entry.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if entry.is_file() and entry.suffix == ".txt":  # a list of image paths, one per line
        lines = entry.read_text(encoding="utf-8").split()
        return sorted(p for p in ((entry.parent / x).resolve() for x in lines) if p.is_file())
    return []


def _label_of(image: Path) -> Path | None:
    parts = list(image.parts)
    if "images" in parts:
        i = len(parts) - 1 - parts[::-1].index("images")
        other = Path(*parts[:i], "labels", *parts[i + 1 :]).with_suffix(".txt")
        if other.is_file():
            return other
    beside = image.with_suffix(".txt")
    return beside if beside.is_file() else None


def manifest_digest(files: dict[str, str]) -> str:
    """sha256 over ``<sha256>  <path>`` lines in path order (``sha256sum``'s format)."""
    text = "".join(f"{sha}  {path}\n" for path, sha in sorted(files.items()))
    return hashlib.sha256(text.encode()).hexdigest()


def dvc_digests(root: Path) -> list[dict[str, Any]]:
    """The outputs DVC recorded for the dataset: ``<root>.dvc`` beside it, any ``*.dvc``
    inside it, and ``dvc.lock`` in it or up to three folders above."""
    found: list[Path] = []
    sidecar = root.with_name(root.name + ".dvc")
    if sidecar.is_file():
        found.append(sidecar)
    found += sorted(root.glob("*.dvc"))
    folder = root
    for _ in range(DVC_LOOKUP_LEVELS + 1):
        if (folder / "dvc.lock").is_file():
            found.append(folder / "dvc.lock")
            break
        if folder.parent == folder:
            break
        folder = folder.parent
    out = []
    for path in found:
        raw = read_yaml(path)
        outs = _dvc_outs(raw)
        if outs:
            out.append({"file": str(path.resolve()), "outs": outs})
    return out


def _dvc_outs(raw: object) -> list[dict[str, Any]]:
    """``outs`` of a ``.dvc`` file or of every stage in a ``dvc.lock``: path and digest."""
    if not isinstance(raw, dict):
        return []
    entries: list[Any] = list(raw.get("outs") or [])
    for stage in (raw.get("stages") or {}).values():
        if isinstance(stage, dict):
            entries += list(stage.get("outs") or [])
    outs = []
    for e in entries:
        if isinstance(e, dict) and e.get("path"):
            digest = e.get("md5") or e.get("etag") or e.get("checksum")
            outs.append({"path": str(e["path"]), "md5": digest, "size": e.get("size"),
                         "nfiles": e.get("nfiles")})  # fmt: skip
    return outs


def git_commit(folder: Path) -> dict[str, Any] | None:
    """HEAD of the git work tree holding ``folder`` and whether it has local changes."""
    try:
        head = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"],
                              capture_output=True, text=True, timeout=10, check=False)  # fmt: skip
        if head.returncode != 0:
            return None
        status = subprocess.run(
            ["git", "-C", str(folder), "status", "--porcelain", "-uno"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip())}


def _mlflow_git(section: dict[str, Any]) -> dict[str, Any] | None:
    """The commit MLflow recorded for the run (it does not record local changes)."""
    commit = ((section.get("run") or {}).get("tags") or {}).get("mlflow.source.git.commit")
    return {"commit": commit, "dirty": None} if commit else None


def onnx_opset(path: Path) -> int | None:
    try:
        import onnx
    except ImportError:
        return None
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001  # protobuf DecodeError and others: the controller says why
        return None
    return next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def tool_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for dist in ("ultralytics", "onnx", "torch", "onnxruntime"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def _plain(value: Any) -> Any:
    """YAML values made JSON-safe (dates and the like become strings)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


# --- comparing and printing ---------------------------------------------------------------


def _changed(a: dict[str, Any], b: dict[str, Any]) -> dict[str, list[Any]]:
    return {k: [a.get(k), b.get(k)] for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def _trained(doc: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The training arguments and final metrics: the Ultralytics run directory's, else the
    MLflow run's parameters and metrics."""
    run = doc.get("run")
    if run:
        return run.get("args") or {}, run.get("metrics") or {}
    ml = (doc.get("mlflow") or {}).get("run") or {}
    return ml.get("params") or {}, ml.get("metrics") or {}


def diff(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """What changed from lineage ``a`` to ``b``: final metrics, training and export
    arguments, versions, and the dataset's files added, removed and changed."""
    (args_a, metrics_a), (args_b, metrics_b) = _trained(a), _trained(b)
    data_a, data_b = a.get("dataset") or {}, b.get("dataset") or {}
    files_a, files_b = data_a.get("files") or {}, data_b.get("files") or {}
    return {
        "weights": [(a.get("weights") or {}).get("sha256"), (b.get("weights") or {}).get("sha256")],
        "mlflow_run": [_mlflow_run_id(a), _mlflow_run_id(b)],
        "metrics": _changed(metrics_a, metrics_b),
        "args": _changed(args_a, args_b),
        "export": _changed(a.get("export") or {}, b.get("export") or {}),
        "versions": _changed(a.get("versions") or {}, b.get("versions") or {}),
        "git": [(a.get("git") or {}).get("commit"), (b.get("git") or {}).get("commit")],
        "dataset": {
            "digest": [data_a.get("digest"), data_b.get("digest")],
            "added": sorted(set(files_b) - set(files_a)),
            "removed": sorted(set(files_a) - set(files_b)),
            "changed": sorted(p for p in set(files_a) & set(files_b) if files_a[p] != files_b[p]),
        },
    }


def _mlflow_run_id(doc: dict[str, Any]) -> str | None:
    return ((doc.get("mlflow") or {}).get("run") or {}).get("id")


def _short(value: object) -> str:
    if value is None:
        return "-"
    text = str(value)
    return text[:12] if len(text) == 64 and all(c in "0123456789abcdef" for c in text) else text


def lines(doc: dict[str, Any]) -> list[str]:
    """``model show``'s lineage section."""
    out = [f"  onnx sha256         {_short(doc['onnx']['sha256'])}"
           f" (opset {_short(doc['onnx'].get('opset'))})"]  # fmt: skip
    if doc.get("pushed_by"):
        out.append(f"  pushed by           {doc['pushed_by']}")
    weights = doc.get("weights")
    shown = f"{weights['file']} sha256 {_short(weights['sha256'])}" if weights else "-"
    out.append(f"  weights             {shown}")
    git = doc.get("git")
    shown = f"{git['commit'][:12]}{' (dirty)' if git['dirty'] else ''}" if git else "-"
    out.append(f"  git commit          {shown}")
    run = doc.get("run")
    if run:
        out.append(f"  run                 {run['dir']} ({run['epochs']} epochs)")
        for key in ("model", "data", "epochs", "imgsz", "batch", "seed"):
            if key in run["args"]:
                out.append(f"    {key:<18}{run['args'][key]}")
        for key, value in run["metrics"].items():
            if key.startswith("metrics/"):
                out.append(f"    {key:<18}{value:.4f}")
    if doc.get("mlflow"):
        out += mlflow_lines(doc["mlflow"])
    data = doc.get("dataset")
    if data:
        out.append(f"  dataset             {data['data_yaml']}")
        out.append(f"    digest            {_short(data['digest'])}"
                   f" ({data['images']} images, {data['labels']} labels)")  # fmt: skip
        for d in data.get("dvc") or []:
            for o in d["outs"]:
                out.append(f"    dvc               {o['path']} md5 {o['md5']} ({d['file']})")
    export = doc.get("export") or {}
    out.append("  export              "
               + (" ".join(f"{k}={v}" for k, v in sorted(export.items())) or "-"))  # fmt: skip
    versions = doc.get("versions") or {}
    out.append("  versions            "
               + " ".join(f"{k} {v}" for k, v in versions.items() if v))  # fmt: skip
    return out


PARAMS_SHOWN = 30  # MLflow run parameters printed (Ultralytics logs ~90); --json has all
SYSTEM_TAG = "mlflow."  # MLflow's own tags (user, source file, run name): in the JSON only


def mlflow_lines(ml: dict[str, Any]) -> list[str]:
    """The registered version a push came from and its source run."""
    model = ml["model"]
    alias = f" (@{model['alias']})" if model.get("alias") else ""
    out = [f"  mlflow model        {model['name']} version {model['version']}{alias}",
           f"    {'tracking uri':<17} {ml['tracking_uri']}",
           f"    {'source':<17} {model['source']}"]  # fmt: skip
    run = ml.get("run")
    if not run:
        return out
    out.append(f"    {'run':<17} {run['id']} ({run['name'] or '-'}) in experiment"
               f" {run['experiment'] or '-'} ({run['experiment_id']})")  # fmt: skip
    out.append(f"    {'artifact uri':<17} {run['artifact_uri']}")
    params = list(run["params"].items())
    out += [f"    {'param ' + k:<17} {v}" for k, v in params[:PARAMS_SHOWN]]
    if len(params) > PARAMS_SHOWN:
        out.append(f"    ... {len(params) - PARAMS_SHOWN} more parameters (--json)")
    out += [f"    {'metric ' + k:<17} {v:.6g}" for k, v in run["metrics"].items()]
    tags = {k: v for k, v in run["tags"].items() if not k.startswith(SYSTEM_TAG)}
    out += [f"    {'tag ' + k:<17} {v}" for k, v in tags.items()]
    return out


FILES_SHOWN = 20  # dataset paths printed per kind; --json has them all


def diff_lines(d: dict[str, Any]) -> list[str]:
    out = []
    for what in ("weights", "mlflow_run", "git"):
        a, b = d[what]
        if what == "mlflow_run" and a is None and b is None:
            continue
        label = what.replace("_", " ")
        out.append(f"{label}: {'same' if a == b else f'{_short(a)} -> {_short(b)}'}")
    for what in ("metrics", "args", "export", "versions"):
        if not d[what]:
            out.append(f"{what}: same")
            continue
        out.append(f"{what}:")
        for key, (a, b) in d[what].items():
            out.append(f"  {key}: {a} -> {b}")
    data = d["dataset"]
    a, b = data["digest"]
    out.append(f"dataset: {'same' if a == b else f'{_short(a)} -> {_short(b)}'}")
    for kind in ("added", "removed", "changed"):
        paths = data[kind]
        out.append(f"  {kind}: {len(paths)} files")
        out += [f"    {p}" for p in paths[:FILES_SHOWN]]
        if len(paths) > FILES_SHOWN:
            out.append(f"    ... {len(paths) - FILES_SHOWN} more (--json)")
    return out
