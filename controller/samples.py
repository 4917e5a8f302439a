"""Samples devices send back: stored (JPEG on disk, a row in the database), listed, and
exported as a YOLO dataset whose labels are the device's own detections (pseudo-labels for
an annotator to correct, and good enough to fine-tune on)."""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from edgefleet.controller.models.devices import Device
from edgefleet.controller.models.rollouts import Rollout
from edgefleet.controller.models.samples import SampleRow
from edgefleet.shared.durable import write_bytes
from edgefleet.shared.errors import ArtifactError, NotFoundError
from edgefleet.shared.topics import validate_device_id
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import and_, false, not_, or_
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

MAX_SAMPLE_BYTES = 8 * 1024 * 1024  # bytes per JPEG
JPEG_MAGIC = b"\xff\xd8\xff"


class SampleMeta(BaseModel):
    """The JSON sidecar the agent writes beside each JPEG (agent/sampler.py)."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    uid: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    device_id: str
    model: str | None = None
    version: str | None = None
    strategy: str = Field(max_length=64)
    reason: str = Field(max_length=256)
    captured_at: datetime
    width: int = Field(ge=0)
    height: int = Field(ge=0)
    detections: list[dict[str, Any]] = Field(default_factory=list, max_length=1000)
    candidates: list[dict[str, Any]] = Field(default_factory=list, max_length=1000)


def parse_meta(raw: str | bytes, device_id: str) -> SampleMeta:
    try:
        meta = SampleMeta.model_validate_json(raw)
    except ValidationError as e:
        raise ArtifactError(f"bad sample metadata: {e.error_count()} error(s)") from e
    validate_device_id(device_id)
    if meta.device_id != device_id:
        raise ArtifactError(f"sample of {meta.device_id!r} sent by {device_id!r}")
    return meta


class SampleStore:
    """JPEGs under ``DATA/samples/<device>/<uid>.jpg``; rows in the ``sample`` table."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def image_path(self, row: SampleRow) -> Path:
        return self.folder / row.device_id / f"{row.uid}.jpg"

    def add(self, session: Session, meta: SampleMeta, image: bytes) -> tuple[SampleRow, bool]:
        """Store one sample; (row, created). A re-sent sample (same uid) is not stored twice."""
        if not image.startswith(JPEG_MAGIC):
            raise ArtifactError("sample image is not a JPEG")
        if len(image) > MAX_SAMPLE_BYTES:
            raise ArtifactError(f"sample image over {MAX_SAMPLE_BYTES} bytes")
        existing = _by_uid(session, meta.device_id, meta.uid)
        if existing is not None:
            return existing, False
        device = session.get(Device, meta.device_id)
        row = SampleRow(
            **meta.model_dump(exclude={"width", "height"}),
            width=meta.width,
            height=meta.height,
            bytes=len(image),
            sha256=hashlib.sha256(image).hexdigest(),
            labels=dict(device.labels) if device else {},
        )
        write_bytes(self.image_path(row), image)
        session.add(row)
        try:
            session.commit()
        except IntegrityError:  # the same upload raced itself
            session.rollback()
            return _by_uid(session, meta.device_id, meta.uid) or row, False
        session.refresh(row)
        return row, True

    def image(self, session: Session, sample_id: int) -> bytes:
        row = get_sample(session, sample_id)
        try:
            return self.image_path(row).read_bytes()
        except FileNotFoundError as e:
            raise NotFoundError(f"sample {sample_id} has no image on disk") from e


def _by_uid(session: Session, device_id: str, uid: str) -> SampleRow | None:
    stmt = select(SampleRow).where(SampleRow.device_id == device_id, SampleRow.uid == uid)
    row: SampleRow | None = session.exec(stmt).first()  # .where() types as Any (sqlmodel)
    return row


def get_sample(session: Session, sample_id: int) -> SampleRow:
    row = session.get(SampleRow, sample_id)
    if row is None:
        raise NotFoundError(f"unknown sample {sample_id}")
    return row


# A version whose latest rollout ended in one of these is a rejected canary: its frames
# show a model that was stopped, and stay out of exports unless asked for.
REJECTED_STATES = frozenset({"failed", "rolled_back", "aborted"})
Rejected = Literal["include", "exclude", "only"]


@dataclass(frozen=True)
class SampleFilter:
    """Which samples: by device and labels (scope), model version, and capture time."""

    device_id: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)  # every one must match
    model: str | None = None
    version: str | None = None
    since: datetime | None = None  # captured at or after
    until: datetime | None = None  # captured before
    rejected: Rejected = "include"


def rejected_versions(session: Session) -> set[tuple[str, str]]:
    """(model, version) pairs whose latest rollout was stopped (failed, rolled back, aborted)."""
    latest: dict[tuple[str, str], tuple[int, str]] = {}
    for rid, model, version, state in session.exec(
        select(Rollout.id, Rollout.model, Rollout.version, Rollout.state)
    ).all():
        key = (model, version)
        if rid is not None and (key not in latest or rid > latest[key][0]):
            latest[key] = (rid, state)
    return {key for key, (_, state) in latest.items() if state in REJECTED_STATES}


def _where(session: Session, f: SampleFilter) -> list[Any]:
    conds: list[Any] = []
    if f.device_id:
        conds.append(col(SampleRow.device_id) == f.device_id)
    for key, value in sorted(f.labels.items()):
        conds.append(col(SampleRow.labels)[key].as_string() == value)
    if f.model:
        conds.append(col(SampleRow.model) == f.model)
    if f.version:
        conds.append(col(SampleRow.version) == f.version)
    if f.since is not None:
        conds.append(col(SampleRow.captured_at) >= _utc(f.since))
    if f.until is not None:
        conds.append(col(SampleRow.captured_at) < _utc(f.until))
    if f.rejected != "include":
        bad = rejected_versions(session)
        hit = or_(false(), *(and_(col(SampleRow.model) == m, col(SampleRow.version) == v)
                             for m, v in sorted(bad)))  # fmt: skip
        if f.rejected == "only":
            conds.append(hit)
        else:  # a sample with no model or version is nobody's rejected canary
            conds.append(or_(col(SampleRow.model).is_(None), col(SampleRow.version).is_(None),
                             not_(hit)))  # fmt: skip
    return conds


def _utc(t: datetime) -> datetime:
    """A time without an offset is UTC (as every time the controller stores)."""
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)


def list_samples(
    session: Session,
    *,
    device_id: str | None = None,
    limit: int = 100,
    where: SampleFilter | None = None,
) -> list[SampleRow]:
    f = where or SampleFilter()
    if device_id:
        f = replace(f, device_id=device_id)
    stmt = select(SampleRow).where(*_where(session, f))
    return list(session.exec(stmt.order_by(col(SampleRow.id).desc()).limit(limit)).all())


# --- export ------------------------------------------------------------------------------


def class_names(samples: Sequence[Mapping[str, Any]]) -> dict[int, str]:
    names: dict[int, str] = {}
    for s in samples:
        for d in s["detections"]:
            names.setdefault(int(d["class_id"]), str(d["class_name"]))
    top = max(names, default=-1)
    return {i: names.get(i, f"class{i}") for i in range(top + 1)}


def yolo_lines(detections: Sequence[Mapping[str, Any]], width: int, height: int) -> list[str]:
    lines = []
    for d in detections:
        x1, y1, x2, y2 = (float(v) for v in d["box_xyxy"])
        w, h = (x2 - x1) / width, (y2 - y1) / height
        if w <= 0 or h <= 0:
            continue
        cx, cy = (x1 + x2) / 2 / width, (y1 + y2) / 2 / height
        lines.append(f"{int(d['class_id'])} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}")
    return lines


def write_yolo_dataset(
    out: Path,
    samples: Sequence[Mapping[str, Any]],
    images: Mapping[int, bytes],
    *,
    val_share: float = 0.2,
    seed: int = 0,
    names: Mapping[int, str] | None = None,  # the model's classes (its card); else from the boxes
) -> Path:
    """images/{train,val}, labels/{train,val} and data.yaml, ready for Ultralytics."""
    usable = [s for s in samples if s["id"] in images and s["width"] and s["height"]]
    ids = sorted(s["id"] for s in usable)
    random.Random(seed).shuffle(ids)
    n_val = max(1, round(len(ids) * val_share)) if len(ids) > 1 else 0
    val = set(ids[:n_val])
    for s in usable:
        split = "val" if s["id"] in val else "train"
        stem = f"{s['device_id']}_{s['id']:06d}"
        write_bytes(out / "images" / split / f"{stem}.jpg", images[s["id"]])
        labels = yolo_lines(s["detections"], s["width"], s["height"])
        write_bytes(out / "labels" / split / f"{stem}.txt", ("\n".join(labels) + "\n").encode())
        side = {k: s[k] for k in ("device_id", "model", "version", "reason", "captured_at")}
        write_bytes(out / "meta" / f"{stem}.json", json.dumps(side, indent=2).encode())
    for split in ("train", "val"):
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
    names = {**class_names(usable), **(names or {})}
    lines = [f"path: {out.resolve()}", "train: images/train",
             f"val: images/{'val' if val else 'train'}", "names:"]  # fmt: skip
    lines += [f"  {i}: {n}" for i, n in sorted(names.items())]
    data_yaml = out / "data.yaml"
    write_bytes(data_yaml, ("\n".join(lines) + "\n").encode())
    return data_yaml
