"""Models, their versions and the TensorRT plans built from them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from edgefleet.controller.models.base import UtcPublic, as_utc
from edgefleet.shared.protocol import utcnow
from pydantic import field_validator
from sqlalchemy import JSON, Column, DateTime, UniqueConstraint
from sqlmodel import Field, SQLModel


class Model(SQLModel, table=True):
    name: str = Field(primary_key=True, max_length=64)
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )


class VersionBase(SQLModel):
    name: str = Field(index=True, max_length=64)
    version: str = Field(max_length=64)
    release: int  # grows by one per model, never reused (TUF custom "release")
    sha256: str = Field(max_length=64)
    length: int  # bytes
    target: str  # TUF target path, models/<name>/<version>/model.onnx
    format: str = "onnx"


class ModelVersion(VersionBase, table=True):
    __tablename__ = "model_version"
    __table_args__ = (
        UniqueConstraint("name", "version", name="uq_version_label"),
        UniqueConstraint("name", "release", name="uq_version_release"),
    )
    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )
    # Where the bytes came from (controller/lineage.py); None for a push without it.
    lineage: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    # Registry stage (controller/stage_lifecycle.py): candidate | staging | production |
    # archived; what last set it ("rollout/5", an admin's name) and when.
    stage: str = Field(
        default="candidate", max_length=16, sa_column_kwargs={"server_default": "candidate"}
    )
    stage_by: str | None = Field(default=None, max_length=128)
    stage_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    # The validation gate's verdict at push (controller/validation_gate.py): "accepted" or
    # "rejected", None when the model had no policy; ``gate`` holds its checks and reasons.
    gate_status: str | None = Field(default=None, max_length=16)
    gate: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))


class VersionPublic(VersionBase, UtcPublic):
    created_at: datetime
    # A re-signed copy (v1-rb9) shows its source's stage: it is the same version.
    stage: str = "candidate"
    gate_status: str | None = None
    gate: dict[str, Any] | None = None


class VersionsPublic(SQLModel):
    data: list[VersionPublic]
    count: int


# --- the validation gate: registered validation sets and a policy per model ---------------


class Dataset(SQLModel, table=True):
    """A validation set registered once (``edgefleet dataset add``), kept by digest under
    ``DATA/datasets/<digest>/`` so every version of a model is judged on the same images."""

    name: str = Field(primary_key=True, max_length=64)
    digest: str = Field(max_length=64)  # sha256 of the manifest (controller/datasets.py)
    images: int
    labelled: int  # images with a YOLO label file
    bytes: int
    created_by: str = Field(max_length=128)
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )


class DatasetPublic(UtcPublic):
    name: str
    digest: str
    images: int
    labelled: int
    bytes: int
    created_by: str
    created_at: datetime


class DatasetsPublic(SQLModel):
    data: list[DatasetPublic]
    count: int


class ModelPolicy(SQLModel, table=True):
    """The validation gate of one model (``edgefleet model policy``); None: not checked."""

    __tablename__ = "model_policy"
    name: str = Field(primary_key=True, max_length=64)
    dataset: str = Field(max_length=64)
    min_map50: float | None = None
    max_regression: float | None = None  # mAP50 points below production's
    max_class_regression: float | None = None  # AP50 points below production's, per class
    latency_budget_ms: float | None = None  # median on the reference profile
    min_images: int = 50  # labelled images the set must have
    min_class_instances: int = 20  # objects a class needs to be judged on its own
    updated_by: str = Field(max_length=128)
    updated_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )


class PolicyPublic(UtcPublic):
    name: str
    dataset: str
    min_map50: float | None
    max_regression: float | None
    max_class_regression: float | None
    latency_budget_ms: float | None
    min_images: int
    min_class_instances: int
    updated_by: str
    updated_at: datetime

    @field_validator("updated_at", mode="after")
    @classmethod
    def _updated_zone(cls, value: datetime) -> datetime | None:
        return as_utc(value)


class PlanBase(SQLModel):
    """A TensorRT plan of one version, built for one GPU, TensorRT release and precision."""

    name: str = Field(index=True, max_length=64)
    version: str = Field(max_length=64)
    compute_capability: str = Field(max_length=8)  # "8.7"
    tensorrt: str = Field(max_length=32)  # "10.3.0"
    precision: str = Field(max_length=8)  # fp32 | fp16 | int8
    sha256: str = Field(max_length=64)
    length: int  # bytes
    # "publisher", or "device:<id>" for a plan a device built and shared
    source: str = Field(default="publisher", max_length=80)
    # signed: listed for devices it fits; pending: shared by a device, waits for an operator
    state: str = Field(default="signed", max_length=16)
    target: str | None = None  # TUF target path once signed


class PlanArtifact(PlanBase, table=True):
    __tablename__ = "plan_artifact"
    __table_args__ = (
        UniqueConstraint(
            "name", "version", "compute_capability", "tensorrt", "precision", "sha256",
            name="uq_plan",
        ),
    )  # fmt: skip
    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )


class PlanPublic(PlanBase, UtcPublic):
    id: int
    created_at: datetime


class PlansPublic(SQLModel):
    data: list[PlanPublic]
    count: int


class ModelPublic(SQLModel):
    name: str
    latest_version: str | None
    production: str | None = None  # the version in the production stage, if any
    versions: list[VersionPublic]


class ModelsPublic(SQLModel):
    data: list[ModelPublic]
    count: int
