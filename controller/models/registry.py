"""Models, their versions and the TensorRT plans built from them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from edgefleet.controller.models.base import UtcPublic
from edgefleet.shared.protocol import utcnow
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


class VersionPublic(VersionBase, UtcPublic):
    created_at: datetime
    # A re-signed copy (v1-rb9) shows its source's stage: it is the same version.
    stage: str = "candidate"


class VersionsPublic(SQLModel):
    data: list[VersionPublic]
    count: int


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
