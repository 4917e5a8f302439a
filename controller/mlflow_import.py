"""``model push NAME --from-mlflow models:/NAME/VERSION``: a registered model version of an
MLflow model registry, as files to push and the ``mlflow`` section of its lineage.

:func:`parse_model_uri` and :func:`pick_files` are pure; :func:`fetch` is the shell that
talks to the tracking store (any URI MLflow takes: ``sqlite:///...``, ``http://...``, a
folder), downloads the version's artifacts and reads its source run: parameters, final
metrics, tags, experiment and artifact URI. Needs the ``mlflow`` extra (``mlflow-skinny``).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from edgefleet.shared.errors import (
    ArtifactError,
    ConfigError,
    EdgefleetError,
    NotFoundError,
    TransportError,
)

OS_ERROR = re.compile(r"\[Errno -?\d+\] ([^\"')]+)")
MODEL_URI = re.compile(r"models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[\w-]+))/?")


@dataclass(frozen=True)
class ModelRef:
    """A registered model version, by number or by alias."""

    name: str
    version: str | None = None
    alias: str | None = None

    def __str__(self) -> str:
        return f"models:/{self.name}/{self.version}" if self.version else (
            f"models:/{self.name}@{self.alias}")  # fmt: skip


@dataclass(frozen=True)
class Imported:
    """What a registered version brought: the file to push (its ONNX, else a ``.pt`` to
    export), the ``.pt`` among its artifacts if any, and the lineage's ``mlflow`` section."""

    file: Path
    weights: Path | None
    lineage: dict[str, Any]


def parse_model_uri(uri: str) -> ModelRef:
    match = MODEL_URI.fullmatch(uri.strip())
    if match is None:
        raise ConfigError(f"bad --from-mlflow {uri!r}: expected models:/NAME/VERSION or "
                          "models:/NAME@ALIAS")  # fmt: skip
    return ModelRef(match["name"], match["version"], match["alias"])


def pick_files(folder: Path, ref: ModelRef) -> tuple[Path, Path | None]:
    """The ONNX and the ``.pt`` among the downloaded artifacts; where several of a kind
    came (an Ultralytics run logs ``best`` and ``last``), the one named ``best``."""
    onnx = _one_of(sorted(folder.rglob("*.onnx")), ref)
    weights = _one_of(sorted(folder.rglob("*.pt")), ref)
    found = onnx or weights
    if found is None:
        raise ArtifactError(f"{ref} has no .onnx (nor .pt to export) among its artifacts",
                            model=ref.name)  # fmt: skip
    return found, weights


def _one_of(found: list[Path], ref: ModelRef) -> Path | None:
    if len(found) <= 1:
        return found[0] if found else None
    best = [p for p in found if p.stem == "best"]
    if len(best) == 1:
        return best[0]
    names = ", ".join(p.name for p in found)
    raise ArtifactError(f"{ref} has several {found[0].suffix} files ({names}); register "
                        "a version with one", model=ref.name)  # fmt: skip


def fetch(ref: ModelRef, tracking_uri: str, dest: Path) -> Imported:
    """Resolve ``ref`` in the registry at ``tracking_uri``, download its artifacts under
    ``dest`` and read its source run."""
    _check_local_store(tracking_uri)
    try:
        from mlflow import MlflowClient
        from mlflow.artifacts import download_artifacts
    except ImportError as e:
        raise ConfigError("--from-mlflow needs the 'mlflow' extra: "
                          "pip install 'edgefleet[mlflow]'") from e  # fmt: skip
    with _mlflow_errors(ref, tracking_uri):
        client = MlflowClient(tracking_uri=tracking_uri)  # opens (and migrates) a SQL store
        mv = (client.get_model_version(ref.name, ref.version) if ref.version
              else client.get_model_version_by_alias(ref.name, str(ref.alias)))  # fmt: skip
        uri = client.get_model_version_download_uri(ref.name, mv.version)
        local = Path(download_artifacts(artifact_uri=uri, dst_path=str(dest),
                                        tracking_uri=tracking_uri))  # fmt: skip
        run = client.get_run(mv.run_id) if mv.run_id else None
        experiment = client.get_experiment(run.info.experiment_id) if run else None
    file, weights = pick_files(local if local.is_dir() else local.parent, ref)
    model = {"name": mv.name, "version": str(mv.version), "alias": ref.alias,
             "source": mv.source, "download_uri": uri}  # fmt: skip
    section = {
        "tracking_uri": redact(tracking_uri),
        "model": model,
        "file": file.name,
        "run": _run_section(run, experiment),
    }
    return Imported(file, weights, section)


def _run_section(run: Any, experiment: Any) -> dict[str, Any] | None:
    if run is None:
        return None
    return {
        "id": run.info.run_id,
        "name": run.info.run_name,
        "experiment_id": run.info.experiment_id,
        "experiment": experiment.name if experiment is not None else None,
        "artifact_uri": redact(run.info.artifact_uri),
        "params": dict(sorted(run.data.params.items())),
        "metrics": {k: float(v) for k, v in sorted(run.data.metrics.items())},
        "tags": dict(sorted(run.data.tags.items())),
    }


def redact(uri: str) -> str:
    """``uri`` without a password in it (``https://user:secret@host`` keeps ``user``)."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def _check_local_store(tracking_uri: str) -> None:
    """MLflow makes a new empty store at a SQLite path or folder that does not exist: a
    typo would read as "no such model" and leave a stray database behind."""
    parts = urlsplit(tracking_uri)
    if parts.scheme == "sqlite" and parts.path not in ("", "/", "/:memory:"):
        path = Path(unquote(parts.path[1:]))  # sqlite:///relative, sqlite:////absolute
        if not path.is_file():
            raise TransportError(f"no MLflow database at {path} (MLFLOW_TRACKING_URI)")
    elif parts.scheme in ("", "file"):
        folder = Path(unquote(parts.path) if parts.scheme else tracking_uri)
        if not folder.is_dir():
            raise TransportError(f"no MLflow store folder at {folder} (MLFLOW_TRACKING_URI)")


@contextlib.contextmanager
def _mlflow_errors(ref: ModelRef, tracking_uri: str) -> Iterator[None]:
    """MLflow's and its stores' errors as one line: an unknown model, version or alias is
    a NotFoundError, anything else (a refused connection, a bad database) a TransportError."""
    try:
        yield
    except EdgefleetError:
        raise
    except Exception as e:  # MlflowException, SQLAlchemy's, requests', OSError: one line
        raise _translated(e, ref, tracking_uri) from e


def _translated(e: Exception, ref: ModelRef, tracking_uri: str) -> EdgefleetError:
    uri = redact(tracking_uri)
    code = getattr(e, "error_code", None)
    if code == "RESOURCE_DOES_NOT_EXIST" or (
        ref.alias and code == "INVALID_PARAMETER_VALUE" and "alias" in str(e)
    ):
        return NotFoundError(f"{ref} is not in the MLflow registry at {uri}", model=ref.name)
    refused = OS_ERROR.search(str(e))
    if refused:  # requests' message nests the URL three times around the reason
        return TransportError(f"MLflow at {uri}: cannot connect: {refused[1]}")
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    secret = urlsplit(tracking_uri).password
    if secret:  # MLflow's messages name the URL it called, password and all
        first = first.replace(secret, "***")
    return TransportError(f"MLflow at {uri}: {first}")
