"""The validation gate's records: registered sets, a policy per model, the verdict of each
push, and the rollout check that refuses a rejected version unless an admin overrides.

The decision itself is controller/validation_gate.py (pure); running the models is
controller/validation_run.py. Which version is "in production" is :func:`production_version`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from edgefleet.controller import model_stages
from edgefleet.controller.datasets import DatasetStore
from edgefleet.controller.models.audit import AuditEntry
from edgefleet.controller.models.devices import Device
from edgefleet.controller.models.registry import Dataset, ModelPolicy, ModelVersion
from edgefleet.controller.registry import check_label, get_version
from edgefleet.controller.rollouts.releases import source_of
from edgefleet.controller.validation_gate import (
    Evaluation,
    GatePolicy,
    GateResult,
    Production,
    judge,
)
from edgefleet.controller.validation_run import EvaluationCache
from edgefleet.shared.errors import (
    ConfigError,
    ConflictError,
    EdgefleetError,
    ForbiddenError,
    NotFoundError,
)
from sqlmodel import Session, col, func, select

ACCEPTED, REJECTED = "accepted", "rejected"


class GateRefusedError(ConflictError):
    """A rollout of a version the validation gate rejected, without an admin's override."""


class GateFolders:
    """Where the gate keeps its files in the data folder."""

    def __init__(self, data_dir: Path) -> None:
        self.datasets = DatasetStore(data_dir / "datasets")
        self.evals = EvaluationCache(data_dir / "gate" / "evals")


# --- validation sets -------------------------------------------------------------------


def add_dataset(
    session: Session, folders: GateFolders, name: str, archive: BinaryIO, actor: str
) -> Dataset:
    """Register ``archive`` (controller/datasets.py) as ``name``; the same content again
    is a no-op, other content under a taken name is refused (409): sets never change."""
    check_label("dataset name", name)
    unpacked = folders.datasets.add(archive)
    row = session.get(Dataset, name)
    if row is not None:
        if row.digest != unpacked.digest:
            raise ConflictError(
                f"dataset {name!r} is registered with other images (digest "
                f"{row.digest[:12]}); register these under a new name"
            )
        return row
    row = Dataset(
        name=name,
        digest=unpacked.digest,
        images=unpacked.images,
        labelled=unpacked.labelled,
        bytes=unpacked.bytes,
        created_by=actor,
    )
    session.add(row)
    session.add(
        AuditEntry(
            actor=actor,
            action="dataset-add",
            target=f"dataset/{name}",
            detail={"digest": unpacked.digest, "images": unpacked.images},
        )
    )
    session.commit()
    session.refresh(row)
    return row


def get_dataset(session: Session, name: str) -> Dataset:
    row = session.get(Dataset, name)
    if row is None:
        raise NotFoundError(f"unknown dataset {name!r} (register it: edgefleet dataset add)")
    return row


def list_datasets(session: Session) -> list[Dataset]:
    return list(session.exec(select(Dataset).order_by(col(Dataset.name))).all())


# --- policies ----------------------------------------------------------------------------


def set_policy(session: Session, name: str, policy: GatePolicy, actor: str) -> ModelPolicy:
    check_label("model name", name)
    dataset = get_dataset(session, policy.dataset)
    if dataset.labelled < policy.min_images:
        raise ConfigError(
            f"dataset {dataset.name!r} has {dataset.labelled} labelled images; "
            f"the gate needs at least {policy.min_images} (--min-images)"
        )
    row = session.get(ModelPolicy, name) or ModelPolicy(
        name=name, dataset=policy.dataset, updated_by=actor
    )
    for key, value in policy.model_dump().items():
        setattr(row, key, value)
    row.updated_by = actor
    session.add(row)
    session.add(
        AuditEntry(
            actor=actor,
            action="policy",
            target=f"model/{name}",
            detail=policy.model_dump(mode="json"),
        )
    )
    session.commit()
    session.refresh(row)
    return row


def get_policy(session: Session, name: str) -> GatePolicy | None:
    row = session.get(ModelPolicy, name)
    if row is None:
        return None
    return GatePolicy.model_validate(row.model_dump(include=set(GatePolicy.model_fields)))


# --- which version is in production ---------------------------------------------------


def production_version(session: Session, name: str) -> ModelVersion | None:
    """THE version a candidate is compared with: the model's version in the production
    registry stage (controller/model_stages.py); while none is (a model whose rollouts
    never reached 100 %, a registry from before stages), the version most devices report
    running (ties: the higher release). A re-signed copy (``v1-rb9``) stands for its source."""
    row = model_stages.production_version(session, name) or _most_run(session, name)
    return source_of(session, row) if row is not None else None


def _version_row(session: Session, name: str, version: str) -> ModelVersion | None:
    stmt = select(ModelVersion).where(ModelVersion.name == name, ModelVersion.version == version)
    row: ModelVersion | None = session.exec(stmt).first()
    return row


def _most_run(session: Session, name: str) -> ModelVersion | None:
    counts = session.exec(
        select(Device.version, func.count())
        .where(Device.model == name, col(Device.version).is_not(None))
        .group_by(col(Device.version))
    ).all()
    ranked = []
    for version, devices in counts:
        row = _version_row(session, name, str(version))
        if row is not None:
            ranked.append((int(devices), row.release, row))
    return max(ranked, key=lambda t: (t[0], t[1]))[2] if ranked else None


# --- the verdict at push ----------------------------------------------------------------


@dataclass(frozen=True)
class _Run:
    """What one model's evaluation needs, read before the database connection is let go."""

    version: str
    sha256: str
    digest: str

    def evaluate(self, folders: GateFolders, artifact_of: Callable[[str], Path]) -> Evaluation:
        tree = folders.datasets.path(self.digest)
        return folders.evals.evaluate(artifact_of(self.sha256), tree, self.sha256, self.digest)


def judge_push(
    session: Session,
    folders: GateFolders,
    row: ModelVersion,
    artifact_of: Callable[[str], Path],
) -> GateResult | None:
    """Evaluate a just-pushed version against its model's policy and record the verdict
    on it; None (nothing recorded) when the model has no policy. ``artifact_of(sha256)``
    gives a version's ONNX file. A failure to evaluate rejects the version. The models
    run (seconds) with no database connection held."""
    policy = get_policy(session, row.name)
    if policy is None:
        return None
    dataset = get_dataset(session, policy.dataset)
    digest = dataset.digest
    candidate = _Run(row.version, row.sha256, digest)
    prod_row = production_version(session, row.name)
    prod = _Run(prod_row.version, prod_row.sha256, digest) if prod_row else None
    if prod_row is not None and prod_row.id == row.id:
        prod = None
    session.commit()  # ends the read transaction: the connection goes back to the pool
    result = _verdict(policy, folders, artifact_of, candidate, prod)
    row.gate_status = result.status
    row.gate = result.model_dump(mode="json")
    session.add(row)
    session.commit()
    session.refresh(row)
    return result


def _verdict(
    policy: GatePolicy,
    folders: GateFolders,
    artifact_of: Callable[[str], Path],
    candidate: _Run,
    production: _Run | None,
) -> GateResult:
    try:
        mine = candidate.evaluate(folders, artifact_of)
        base = None
        if production is not None:
            base = Production(production.version, production.evaluate(folders, artifact_of))
        return judge(policy, mine, base)
    except EdgefleetError as e:
        return _failed(policy, candidate.digest, f"evaluation failed: {e.reason}")


def _failed(policy: GatePolicy, digest: str, reason: str) -> GateResult:
    return GateResult(
        status="rejected",
        reasons=[reason],
        checks=[],
        not_judged=[],
        dataset=policy.dataset,
        dataset_digest=digest,
        production=None,
        regression_interval=None,
        candidate={},
        baseline=None,
    )


# --- rollouts of a rejected version -----------------------------------------------------


def rejected_reasons(session: Session, name: str, version: str) -> list[str] | None:
    """Why the gate rejected ``name:version`` (a re-signed copy: its source), else None."""
    row = source_of(session, get_version(session, name, version))
    if row.gate_status != REJECTED:
        return None
    return list((row.gate or {}).get("reasons", [])) or ["no reason recorded"]


def _refusal(name: str, version: str, reasons: list[str]) -> GateRefusedError:
    return GateRefusedError(
        f"{name}:{version} was rejected by the validation gate ({'; '.join(reasons)}); "
        "an admin may roll it out with --override-gate",
        model=name,
    )


def refuse_rejected(session: Session, name: str, version: str) -> None:
    """409 for a pin or a channel set to a rejected version (no override there: an admin
    rolls such a version out with ``rollout create --override-gate``)."""
    reasons = rejected_reasons(session, name, version)
    if reasons is not None:
        raise _refusal(name, version, reasons)


def check_rollout(
    session: Session, name: str, version: str, *, override: bool, role: str, actor: str
) -> None:
    """Refuse a rollout of a version the gate rejected (409) unless ``override`` by an
    admin (403 for anyone else). An override adds its audit entry to ``session``: it is
    committed with the rollout, and dropped with it when the rollout is refused later."""
    from edgefleet.controller.tokens import rank

    reasons = rejected_reasons(session, name, version)
    if reasons is None:
        return
    if not override:
        raise _refusal(name, version, reasons)
    if rank(role) < rank("admin"):
        raise ForbiddenError(
            f"overriding the validation gate needs an admin token (this is {role})"
        )
    detail = {"reasons": reasons}
    session.add(AuditEntry(actor=actor, action="gate-override", target=f"{name}:{version}",
                           detail=detail))  # fmt: skip
