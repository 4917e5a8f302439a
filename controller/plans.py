"""TensorRT plans of a model version, and which artifact each device is given.

A plan is a companion of a published version: same model, version and release as its ONNX,
signed into the ``models`` role under ``models/<name>/<version>/plan-<sm>-<trt>-<prec>.plan``
with its engine fingerprint and the model's input size and class names (a serialized engine
carries no metadata, and the device runs it without the ONNX). Plans come from two places:

* the publisher's build farm: ``edgefleet model plan push``, signed at once;
* a device that built one itself (``POST /v1/devices/{id}/plans`` with its certificate):
  kept as *pending* until an operator approves it (``edgefleet model plan approve ID``),
  because a plan is native code for the GPU and one device must not be able to make the
  others run what it chose. Once approved it is signed like any other, and every device of
  that fingerprint gets it instead of building its own.

:func:`target_for` is what every assignment (rollout, rollback, pin) asks: the plan whose
fingerprint fits the device (``artifact_choice.choose_artifact``), else the ONNX.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO

from edgefleet.controller.artifact_choice import PLAN, Artifact, choose_artifact
from edgefleet.controller.artifacts import ArtifactStore
from edgefleet.controller.models.devices import Device
from edgefleet.controller.models.registry import ModelVersion, PlanArtifact
from edgefleet.controller.registry import get_version
from edgefleet.controller.signing.targets import TargetInfo
from edgefleet.controller.trust import Signing
from edgefleet.shared.engines import EngineFingerprint
from edgefleet.shared.errors import ArtifactError, ConflictError, NotFoundError
from edgefleet.shared.profiles import FirmwareProfile, load_profiles, shipped_profiles_dir
from edgefleet.shared.protocol import Fingerprint
from pydantic import ValidationError
from sqlmodel import Session, col, select

log = logging.getLogger(__name__)

MIN_PLAN_BYTES = 1024  # an engine of even the smallest network is far larger
MAX_PENDING_PER_SOURCE = 8  # plans one device may leave waiting for approval (disk bound)


class PlanExistsError(ConflictError):
    """This version already has a signed plan for that fingerprint (HTTP 409)."""


def push_plan(
    session: Session,
    store: ArtifactStore,
    signing: Signing | None,
    *,
    name: str,
    version: str,
    source: BinaryIO,
    engine: EngineFingerprint,
    origin: str = "publisher",
) -> PlanArtifact:
    """Store a plan of ``name:version``; sign it now unless ``signing`` is None (pending)."""
    if problems := engine.problems():
        raise ArtifactError(f"invalid engine fingerprint: {'; '.join(problems)}")
    row = get_version(session, name, version)
    if engine.onnx_sha256 and engine.onnx_sha256 != row.sha256:
        raise ArtifactError(
            f"the plan was built from ONNX {engine.onnx_sha256[:12]}, but {name}:{version} "
            f"is {row.sha256[:12]}"
        )
    if signing is not None and _signed(session, row, engine):
        raise PlanExistsError(
            f"{name}:{version} already has a signed plan for {engine.slug()}", model=name
        )
    waiting = [p for p in list_plans(session) if p.source == origin and p.state == "pending"]
    if signing is None and len(waiting) >= MAX_PENDING_PER_SOURCE:
        raise ArtifactError(
            f"{origin} already has {len(waiting)} plans waiting for approval: approve or "
            "wait before it shares more"
        )
    with store.staged(source) as (tmp, digest, length):
        _check_plan_bytes(length)
        stored = store.commit(tmp, digest)
    same = [
        p for p in list_plans(session, name, version)
        if (p.compute_capability, p.tensorrt, p.precision, p.sha256)
        == (engine.compute_capability, engine.tensorrt, engine.precision, stored.sha256)
    ]  # fmt: skip
    plan = same[0] if same else None
    if plan is None:
        plan = PlanArtifact(
            name=name, version=version, compute_capability=engine.compute_capability,
            tensorrt=engine.tensorrt, precision=engine.precision, sha256=stored.sha256,
            length=stored.length, source=origin, state="pending",
        )  # fmt: skip
    if signing is not None:
        _sign(plan, row, store.local_copy, signing)
    session.add(plan)
    session.commit()
    session.refresh(plan)
    return plan


def approve_plan(
    session: Session, store: ArtifactStore, signing: Signing, plan_id: int
) -> PlanArtifact:
    """Sign a plan a device shared; refused when one is already signed for its fingerprint."""
    plan = get_plan(session, plan_id)
    if plan.state == "signed":
        return plan
    row = get_version(session, plan.name, plan.version)
    engine = _engine_of(plan, row)
    if _signed(session, row, engine):
        raise PlanExistsError(
            f"{plan.name}:{plan.version} already has a signed plan for {engine.slug()}",
            model=plan.name,
        )
    _sign(plan, row, store.local_copy, signing)
    session.add(plan)
    session.commit()
    session.refresh(plan)
    return plan


def get_plan(session: Session, plan_id: int) -> PlanArtifact:
    plan = session.get(PlanArtifact, plan_id)
    if plan is None:
        raise NotFoundError(f"unknown plan {plan_id}")
    return plan


def version_of_onnx(session: Session, onnx_sha256: str) -> ModelVersion:
    """The newest published version whose ONNX has these bytes."""
    stmt = (
        select(ModelVersion)
        .where(ModelVersion.sha256 == onnx_sha256, ModelVersion.format == "onnx")
        .order_by(col(ModelVersion.release).desc())
    )
    row: ModelVersion | None = session.exec(stmt).first()  # .where() types as Any (sqlmodel)
    if row is None:
        raise NotFoundError(f"no published version has the ONNX {onnx_sha256[:12]}")
    return row


def list_plans(
    session: Session, name: str | None = None, version: str | None = None
) -> list[PlanArtifact]:
    stmt = select(PlanArtifact).order_by(col(PlanArtifact.id))
    if name is not None:
        stmt = stmt.where(PlanArtifact.name == name)
    if version is not None:
        stmt = stmt.where(PlanArtifact.version == version)
    return list(session.exec(stmt).all())


def carry_plans(
    session: Session,
    path_for: Callable[[str], Path],
    signing: Signing,
    old: ModelVersion,
    new: ModelVersion,
) -> None:
    """Sign ``old``'s plans again under ``new`` (a rollback's re-signed release of the same
    bytes), so devices that ran a plan go back to a plan, not to a fresh engine build."""
    for plan in list_plans(session, old.name, old.version):
        if plan.state != "signed":
            continue
        copy = PlanArtifact(
            name=new.name, version=new.version, compute_capability=plan.compute_capability,
            tensorrt=plan.tensorrt, precision=plan.precision, sha256=plan.sha256,
            length=plan.length, source=plan.source, state="pending",
        )  # fmt: skip
        _sign(copy, new, path_for, signing)
        session.add(copy)


def target_for(
    session: Session, signing: Signing, version: ModelVersion, device: Device | None
) -> TargetInfo:
    """What ``device`` is given of ``version``: a signed plan that fits it, else the ONNX."""
    onnx = Artifact(version.target, version.sha256, version.length, "onnx")
    plans = [p for p in list_plans(session, version.name, version.version) if p.target]
    fingerprint = _fingerprint(device)
    if not plans or fingerprint is None:
        return signing.target(version.target)
    artifacts = [onnx] + [
        Artifact(p.target or "", p.sha256, p.length, PLAN, _engine_of(p, version)) for p in plans
    ]
    profile = device_profiles().get(fingerprint.profile or "")
    choice = choose_artifact(
        fingerprint,
        artifacts,
        precision=profile.precision if profile else None,
        native_tensorrt="tensorrt" in profile.backends if profile else bool(fingerprint.tensorrt),
    )
    chosen = choice.artifact or onnx
    log.debug("%s gets %s (%s)", device.device_id if device else "?", chosen.target, choice.reason)
    return signing.target(chosen.target)


@lru_cache(maxsize=1)
def device_profiles() -> dict[str, FirmwareProfile]:
    """The firmware profiles shipped with edgefleet, by name."""
    return load_profiles(shipped_profiles_dir())


def _fingerprint(device: Device | None) -> Fingerprint | None:
    if device is None or not device.fingerprint:
        return None
    try:
        return Fingerprint.model_validate(device.fingerprint)
    except ValidationError:
        log.warning("device %s reported an unreadable fingerprint", device.device_id)
        return None


def _engine_of(plan: PlanArtifact, version: ModelVersion) -> EngineFingerprint:
    return EngineFingerprint(plan.compute_capability, plan.tensorrt, plan.precision, version.sha256)


def _signed(session: Session, version: ModelVersion, engine: EngineFingerprint) -> bool:
    return any(
        p.state == "signed"
        and (p.compute_capability, p.tensorrt, p.precision)
        == (engine.compute_capability, engine.tensorrt, engine.precision)
        for p in list_plans(session, version.name, version.version)
    )


def _sign(
    plan: PlanArtifact, version: ModelVersion, path_for: Callable[[str], Path], signing: Signing
) -> None:
    info = signing.add_model_target(
        version.name, version.version, version.release, path_for(plan.sha256),
        format=PLAN, fingerprint=_engine_of(plan, version).to_custom(),
        model_info=onnx_model_info(path_for(version.sha256)),
    )  # fmt: skip
    plan.target, plan.state = info.target_path, "signed"


def _check_plan_bytes(length: int) -> None:
    # A plan cannot be checked without TensorRT and the GPU it was built for; the device
    # checks it when it loads, and a plan that fails there is reverted like any bad model.
    if length < MIN_PLAN_BYTES:
        raise ArtifactError(f"not a TensorRT plan: {length} bytes is too small for an engine")


@lru_cache(maxsize=64)
def onnx_model_info(path: Path) -> dict[str, object]:
    """Input size, class names and output kind of a stored ONNX, as the agent reads them."""
    import onnx

    from edgefleet.runtime.metadata import info_document, model_info

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf raises its own DecodeError; any failure reads the same
        raise ArtifactError(f"cannot read the version's ONNX metadata: {e}") from e

    def shape(value: onnx.ValueInfoProto) -> list[object]:
        dims = value.type.tensor_type.shape.dim
        return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in dims]

    props = {p.key: p.value for p in model.metadata_props}
    info = model_info(props, shape(model.graph.input[0]), shape(model.graph.output[0]))
    return info_document(info)
