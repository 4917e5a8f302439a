"""Release counters seen from the controller: what a device has installed, and a version's
bytes signed again under a higher release so that a device takes an older version.

The agent refuses a release lower than the highest one it ever committed for the model
(``agent/install_policy.py``). So a rollback, and a rollout that points a device at a
version older than what it installed, sign the version's bytes again as
``<version>-rb<release>`` (a new image-repository entry with the next release counter:
Trust issue, "a deliberate downgrade is a newly signed entry with a higher counter pointing
at the old bytes"). Such a copy *is* its source version: rollouts count a device running
it as running the source, and model cards and drift baselines are the source's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from edgefleet.controller import plans, registry
from edgefleet.controller.models.devices import Device
from edgefleet.controller.models.registry import ModelVersion
from edgefleet.controller.models.telemetry import EventRow
from edgefleet.controller.registry import source_label
from edgefleet.controller.trust import Signing
from edgefleet.shared.protocol import Phase
from sqlmodel import Session, col, select


def source_of(session: Session, version: ModelVersion) -> ModelVersion:
    """The version ``version`` is a re-signed copy of (same bytes), else ``version``."""
    label = source_label(version.version)
    if label == version.version:
        return version
    row = session.exec(
        select(ModelVersion).where(ModelVersion.name == version.name, ModelVersion.version == label)
    ).first()
    return row if row is not None and row.sha256 == version.sha256 else version


def aliases(session: Session, version: ModelVersion) -> list[ModelVersion]:
    """``version``'s source and every re-signed copy of it, lowest release first."""
    source = source_of(session, version)
    rows = session.exec(
        select(ModelVersion).where(
            ModelVersion.name == source.name, ModelVersion.sha256 == source.sha256
        )
    ).all()
    same = [r for r in rows if r.id == source.id or source_label(r.version) == source.version]
    return sorted(same, key=lambda r: r.release)


def installed_releases(session: Session, model: str, device_ids: Iterable[str]) -> dict[str, int]:
    """The highest release of ``model`` each device is known to have committed: the
    version it runs now, and every version it reported committed (its event history)."""
    ids = list(device_ids)
    if not ids:
        return {}
    release = dict(
        session.exec(
            select(ModelVersion.version, ModelVersion.release).where(ModelVersion.name == model)
        ).all()
    )
    seen: dict[str, set[str]] = {d: set() for d in ids}
    running = session.exec(
        select(Device.device_id, Device.version).where(
            col(Device.device_id).in_(ids), Device.model == model
        )
    ).all()
    committed = session.exec(
        select(EventRow.device_id, EventRow.version)
        .where(col(EventRow.device_id).in_(ids), EventRow.kind == "phase")
        .where(EventRow.phase == Phase.COMMITTED.value, EventRow.model == model)
        .distinct()
    ).all()
    for device_id, version in [*running, *committed]:
        if version is not None:
            seen[device_id].add(version)
    out = {}
    for device_id, versions in seen.items():
        known = [release[v] for v in versions if v in release]
        if known:
            out[device_id] = max(known)
    return out


def resign(
    session: Session, signing: Signing, artifact_path: Callable[[str], Path], old: ModelVersion
) -> ModelVersion:
    """``old``'s bytes (its source's) as a new version with the model's next release,
    labelled ``<source>-rb<release>``; TensorRT plans are carried over. Flushed, not
    committed."""
    source = source_of(session, old)
    path = artifact_path(source.sha256)
    with registry.PUSH_LOCK:  # the release counter is "max + 1", as in a push
        release = registry.next_release(session, source.name)
        label = f"{source.version}-rb{release}"[:64]
        info = signing.add_model_target(source.name, label, release, path, format=source.format)
        session.add(ModelVersion(
            name=source.name, version=label, release=release, sha256=info.sha256,
            length=info.length, target=info.target_path, format=source.format,
        ))  # fmt: skip
        session.flush()
        new = registry.get_version(session, source.name, label)
        plans.carry_plans(session, artifact_path, signing, source, new)
    return new


def entry_for(
    session: Session,
    signing: Signing,
    artifact_path: Callable[[str], Path],
    version: ModelVersion,
    installed: int | None,
) -> ModelVersion:
    """What a device that installed release ``installed`` of the model is given of
    ``version``: the version itself when the agent accepts its release, else its newest
    re-signed copy that is high enough, else a new one."""
    if installed is None or version.release >= installed:
        return version
    newest = aliases(session, version)[-1]
    if newest.release >= installed:
        return newest
    return resign(session, signing, artifact_path, version)
