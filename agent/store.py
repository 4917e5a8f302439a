"""Durable device state: which verified model is current, which came before, what was installed.

Layout under ``data_dir``::

    state.json               {"schema", "current", "previous", "installed"}
    models/<sha256>.onnx     verified artifacts, named by content
    models/<sha256>.plan     a prebuilt TensorRT plan the controller chose for this device,
    models/<sha256>.json     with the model info (input size, class names) its target carries

Every write is write -> fsync -> rename -> fsync(dir) (``shared/durable.py``), so after a
power cut the pointer names either the old model or the new one. On load each pointer is
checked against its file (exists, sha256 matches); a bad current falls back to the previous
one, and a bad previous to none.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgefleet.shared.durable import fsync_dir, write_bytes
from edgefleet.shared.errors import ArtifactError
from edgefleet.shared.hashing import sha256_file

from edgefleet.runtime.engine_cache import INFO_SUFFIX, PLAN_SUFFIX, write_info
from edgefleet.runtime.metadata import info_from_document

log = logging.getLogger(__name__)

STATE_SCHEMA = 1


@dataclass(frozen=True)
class ModelPointer:
    """One verified artifact on disk and what it is."""

    model: str
    version: str
    release: int
    sha256: str
    file: str  # name inside data_dir/models
    target: str | None = None  # TUF target path


@dataclass
class StoreState:
    current: ModelPointer | None = None
    previous: ModelPointer | None = None
    installed: dict[str, int] = field(default_factory=dict)  # model -> highest release


def _pointer(obj: Any) -> ModelPointer | None:
    if obj is None:
        return None
    try:
        return ModelPointer(**obj)
    except TypeError:
        return None


@dataclass(frozen=True)
class CacheQuota:
    """How many verified artifacts the model store may keep. The current and the previous
    model are always kept, whatever the quota, so a revert never needs the network."""

    max_artifacts: int = 2  # files, current and previous included
    max_bytes: int | None = None  # all kept artifacts together; None: no byte limit


@dataclass(frozen=True)
class CachedFile:
    name: str
    size: int  # bytes
    mtime: float  # seconds since the epoch; newer is kept first


def evictions(files: list[CachedFile], pinned: set[str], quota: CacheQuota) -> list[str]:
    """Which files to delete: pinned ones never; the rest newest first while within quota."""
    kept = [f for f in files if f.name in pinned]
    count, size = len(kept), sum(f.size for f in kept)
    out: list[str] = []
    for f in sorted((f for f in files if f.name not in pinned), key=lambda f: -f.mtime):
        fits = count < quota.max_artifacts and (
            quota.max_bytes is None or size + f.size <= quota.max_bytes
        )
        if fits:
            count, size = count + 1, size + f.size
        else:
            out.append(f.name)
    return out


class DeviceStore:
    """The on-disk state of one device. Single writer: the reconcile loop."""

    def __init__(self, data_dir: Path, quota: CacheQuota | None = None) -> None:
        self.data_dir = data_dir
        self.quota = quota or CacheQuota()
        self.models_dir = data_dir / "models"
        self.state_path = data_dir / "state.json"
        self.state = StoreState()

    def artifact_path(self, pointer: ModelPointer) -> Path:
        return self.models_dir / pointer.file

    def load(self) -> StoreState:
        """Read state.json and keep only pointers whose artifact is intact."""
        self.models_dir.mkdir(parents=True, exist_ok=True)
        self._drop_partials()
        raw = self._read_raw()
        current, previous = _pointer(raw.get("current")), _pointer(raw.get("previous"))
        installed = {str(k): int(v) for k, v in (raw.get("installed") or {}).items()}
        if previous is not None and not self._intact(previous):
            previous = None
        if current is not None and not self._intact(current):
            current, previous = previous, None
        self.state = StoreState(current, previous, installed)
        return self.state

    def _drop_partials(self) -> None:
        """A download cut off by a crash or power loss leaves a hidden ``.*.part``: never
        served (only pointers name what runs), and deleted here so it cannot fill the disk."""
        for part in self.models_dir.glob(".*.part"):
            log.info("removing partial download %s left by an earlier run", part.name)
            part.unlink(missing_ok=True)

    def _read_raw(self) -> dict[str, Any]:
        try:
            raw = json.loads(self.state_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            log.warning(
                "device state %s unreadable (%s): starting with no model", self.state_path, e
            )
            return {}
        if not isinstance(raw, dict) or raw.get("schema") != STATE_SCHEMA:
            log.warning("device state %s has an unknown schema: ignoring it", self.state_path)
            return {}
        return raw

    def _intact(self, pointer: ModelPointer) -> bool:
        path = self.artifact_path(pointer)
        try:
            ok = bool(sha256_file(path) == pointer.sha256)
        except OSError:
            ok = False
        if not ok:
            log.warning(
                "artifact %s for %s %s is missing or corrupt", path, pointer.model, pointer.version
            )
        return ok

    def adopt(
        self, downloaded: Path, sha256: str, *, plan_info: Mapping[str, Any] | None = None
    ) -> str:
        """Move a verified download to ``models/<sha256>.onnx`` (or ``.plan``, with the
        model info its signed target carries written beside it first); returns the name."""
        name = f"{sha256}{PLAN_SUFFIX if plan_info is not None else '.onnx'}"
        dest = self.models_dir / name
        self.models_dir.mkdir(parents=True, exist_ok=True)
        if plan_info is not None:
            write_info(dest, info_from_document(plan_info))
        if downloaded.resolve() != dest.resolve():
            try:
                downloaded.replace(dest)
            except OSError as e:
                raise ArtifactError(f"cannot move {downloaded} into the model store: {e}") from e
            fsync_dir(self.models_dir)
        if sha256_file(dest) != sha256:
            raise ArtifactError(f"artifact {dest.name} does not match its sha256")
        return name

    def commit(self, pointer: ModelPointer) -> None:
        """Make ``pointer`` current (the old current becomes previous), durably."""
        old = self.state.current
        previous = old if old is not None and old.sha256 != pointer.sha256 else self.state.previous
        installed = dict(self.state.installed)
        installed[pointer.model] = max(installed.get(pointer.model, 0), pointer.release)
        self.state = StoreState(pointer, previous, installed)
        self._save()
        self._prune()

    def fall_back(self) -> ModelPointer | None:
        """The current model cannot run: make the previous one current, durably."""
        s = self.state
        self.state = StoreState(s.previous, None, dict(s.installed))
        self._save()
        return self.state.current

    def installed_releases(self) -> dict[str, int]:
        return dict(self.state.installed)

    def _save(self) -> None:
        s = self.state
        doc = {
            "schema": STATE_SCHEMA,
            "current": asdict(s.current) if s.current else None,
            "previous": asdict(s.previous) if s.previous else None,
            "installed": s.installed,
        }
        write_bytes(self.state_path, json.dumps(doc, indent=2, sort_keys=True).encode())

    def _prune(self) -> None:
        """Apply the cache quota; current and previous are never deleted."""
        pinned = {p.file for p in (self.state.current, self.state.previous) if p is not None}
        files = []
        for path in [*self.models_dir.glob("*.onnx"), *self.models_dir.glob(f"*{PLAN_SUFFIX}")]:
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            files.append(CachedFile(path.name, st.st_size, st.st_mtime))
        for name in evictions(files, pinned, self.quota):
            (self.models_dir / name).unlink(missing_ok=True)
            (self.models_dir / name).with_suffix(INFO_SUFFIX).unlink(missing_ok=True)
